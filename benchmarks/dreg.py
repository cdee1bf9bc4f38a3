"""IWAE's gradient against the doubly reparameterised one (DReG, Tucker et al. 2019), side by
side: the same model, seed, batches and k; only the estimator of the encoder's gradient differs
(the bound, and the decoder's gradient, are the same). On dynamically binarised MNIST with the
IWAE paper's one-stochastic-layer model (784-200-200-50, tanh), or `--arch ladder`.

Prints, per estimator: each epoch's training bound (the negative k-sample bound), the test NLL
(k = --eval-k) and ELBO on the first --eval-n test images (binarised once with seed 0), the
active units, the seconds per epoch, the paired difference of the two models' test NLL (the
same images and bits, so its standard error is that of the per-image differences), and, on each
trained model, the variance of both
estimators' encoder gradients over --draws repeated draws on one batch of 100 test images
(summed over the encoder's weights): what DReG exists to lower.

    python benchmarks/dreg.py --data-dir ../shared/data/mnist --epochs 10 --compile
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import vaekit
from vaekit.evaluate import evaluate, prepare_eval_data
from vaekit.objectives import iwae

MODELS = {
    "mlp": dict(hidden=[200, 200], latent_dim=50),
    "ladder": dict(arch="ladder", hidden=[100, 100], latent_dims=[100, 50], ladder_hidden=[50, 50]),
}


def grad_variance(model, x: torch.Tensor, k: int, dreg: bool, draws: int) -> float:
    """Summed variance of the encoder's gradient of the mean bound on batch x over `draws` draws."""
    params = list(model.encoder.parameters())
    model.train()
    grads = []
    for _ in range(draws):
        model.zero_grad()
        iwae(model, x, k=k, dreg=dreg).bound.mean().backward()
        grads.append(torch.cat([p.grad.flatten() for p in params]))
    model.zero_grad()
    return float(torch.stack(grads).var(0).sum())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--arch", choices=list(MODELS), default="mlp")
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--eval-k", type=int, default=1000)
    p.add_argument("--eval-n", type=int, default=1000)
    p.add_argument("--draws", type=int, default=50)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--compile", action="store_true", help="torch.compile the training step (both runs)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    train = vaekit.load_data("mnist", "train", args.data_dir)
    test = vaekit.load_data("mnist", "test", args.data_dir)
    models, per_image = {}, {}
    for dreg in (False, True):
        config = vaekit.Config(activation="tanh", likelihood="bernoulli", binarize="dynamic", objective="iwae",
                               k=args.k, dreg=dreg, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                               lr_schedule="cosine", lr_warmup=1.0, lr_final=0.05, val_fraction=0, patience=0,
                               seed=0, progress=False, compile=args.compile, **MODELS[args.arch])
        t = time.perf_counter()
        model = vaekit.fit(train, config)
        seconds = time.perf_counter() - t
        test_x = prepare_eval_data(model, test.x[:args.eval_n])
        torch.manual_seed(0)
        r = evaluate(model, test_x, k=args.eval_k)
        models[dreg] = (model, test_x[:100])
        torch.manual_seed(0)
        per_image[dreg] = -vaekit.log_likelihood(model, test_x, k=args.eval_k)  # (N,) nats
        epoch_s = model.history.column("seconds")
        print(json.dumps({"estimator": "dreg" if dreg else "iwae", "arch": args.arch, "k": args.k,
                          "epochs": args.epochs, "train_loss": [round(v, 2) for v in model.history.column("train_loss")],
                          "test_nll": round(r["nll"], 2), "nll_se": round(r["nll_se"], 2),
                          "test_elbo": round(r["elbo"], 2), "active_units": r["active_units"],
                          "median_epoch_s": round(sorted(epoch_s)[len(epoch_s) // 2], 2),
                          "train_seconds": round(seconds)}), flush=True)
    gain = per_image[False] - per_image[True]  # (N,) IWAE's NLL minus DReG's, image by image
    print(json.dumps({"nll_iwae_minus_dreg": round(float(gain.mean()), 3),
                      "se": round(float(gain.std() / len(gain) ** 0.5), 3), "n": len(gain)}), flush=True)
    for dreg, (model, x) in models.items():
        torch.manual_seed(1)
        v = {name: grad_variance(model, x, args.k, est, args.draws) for name, est in (("iwae", False), ("dreg", True))}
        print(json.dumps({"model_trained_with": "dreg" if dreg else "iwae", "draws": args.draws,
                          "encoder_grad_variance": {n: f"{x:.4g}" for n, x in v.items()},
                          "ratio": round(v["iwae"] / v["dreg"], 1)}), flush=True)


if __name__ == "__main__":
    main()
