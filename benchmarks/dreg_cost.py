"""The cost of a DReG step against an IWAE step, per architecture, side by side in one process:
blocks of training steps (forward and backward of the k-sample bound) alternated between the
two estimators, the best block of each kept. On `digits` (8 x 8, shipped with scikit-learn):
the MLP, the two-layer ladder and the conv hierarchy (hvae). DReG scores a hierarchy's q(z|x)
again at a detached copy of z, and hvae's top-down pass, cached for IWAE, runs again for the
decoder, the prior and q.

    python benchmarks/dreg_cost.py --k 5 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import vaekit
from vaekit.objectives import iwae

ARCHS = {
    "mlp": dict(hidden=[200, 200], latent_dim=50, input_shape=[1, 8, 8]),
    "ladder": dict(arch="ladder", hidden=[100, 100], latent_dims=[16, 8], ladder_hidden=[50, 50], input_shape=[1, 8, 8]),
    "hvae": dict(arch="hvae", channels=[16, 32], latent_channels=4, input_shape=[1, 8, 8]),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--blocks", type=int, default=6)
    p.add_argument("--steps", type=int, default=5, help="steps per block")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    x = vaekit.load_data("digits").x[:args.batch_size].bernoulli(generator=torch.Generator().manual_seed(0))
    for name, kw in ARCHS.items():
        torch.manual_seed(0)
        model = vaekit.VAE.from_config(vaekit.Config(likelihood="bernoulli", activation="tanh", **kw))

        def step(dreg: bool) -> None:
            model.zero_grad()
            iwae(model, x, k=args.k, dreg=dreg).bound.mean().backward()

        best = {False: float("inf"), True: float("inf")}
        for d in (False, True):
            step(d)  # warm
        for _ in range(args.blocks):
            for d in (False, True):
                t = time.perf_counter()
                for _ in range(args.steps):
                    step(d)
                best[d] = min(best[d], (time.perf_counter() - t) / args.steps)
        print(json.dumps({"arch": name, "k": args.k, "batch": args.batch_size, "iwae_ms": round(best[False] * 1e3, 2),
                          "dreg_ms": round(best[True] * 1e3, 2), "dreg_over_iwae": round(best[True] / best[False], 2)}),
              flush=True)


if __name__ == "__main__":
    main()
