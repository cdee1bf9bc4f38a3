"""Posterior collapse in the ladder VAE on digits, and what prevents it: the KL per
stochastic layer and the test NLL (k = 200) for a one-layer model and for the two-layer ladder
without help, with a KL warm-up, with free bits, and with IWAE + warm-up.

    python benchmarks/ladder_collapse.py
"""

import torch

import vaekit
from vaekit.evaluate import evaluate, prepare_eval_data

RUNS = {
    "one layer (d = 16)": dict(latent_dim=16),
    "ladder 16,8": dict(arch="ladder", latent_dims=[16, 8], ladder_hidden=[64, 64]),
    "ladder 16,8, warm-up 20": dict(arch="ladder", latent_dims=[16, 8], ladder_hidden=[64, 64], kl_warmup=20),
    "ladder 16,8, free bits 0.1": dict(arch="ladder", latent_dims=[16, 8], ladder_hidden=[64, 64], free_bits=0.1),
    "ladder 16,8, IWAE k=5, warm-up 20": dict(arch="ladder", latent_dims=[16, 8], ladder_hidden=[64, 64],
                                              kl_warmup=20, objective="iwae", k=5),
}


def main() -> None:
    train, test = vaekit.load_data("digits", "train"), vaekit.load_data("digits", "test")
    for name, kw in RUNS.items():
        torch.manual_seed(0)
        config = vaekit.Config(hidden=[128, 128], epochs=40, batch_size=64, lr=2e-3, patience=0, progress=False, **kw)
        model = vaekit.fit(train, config)
        r = evaluate(model, prepare_eval_data(model, test.x), k=200)
        layers = r.get("kl_per_layer")
        print(f"{name:36s} NLL {r['nll']:6.2f}  ELBO {r['elbo']:7.2f}  active {r['active_units']:2d}"
              + (f"  KL per layer {layers}" if layers else ""))


if __name__ == "__main__":
    main()
