"""The parts of a training step that vaekit does differently from the obvious code, each
timed against that code on a 128-image MNIST-shaped batch (best of many, microseconds):

- gathering the batch: `x.index_select(0, idx)` (stream.rows) against `x[idx]`;
- dynamic binarisation: `1[u < p]` (data.binarize_dynamic) against `torch.bernoulli(p)`;
- the Bernoulli log-likelihood, forward and backward: `sum x*l - sum softplus(l)`
  (likelihoods.SummedBernoulli) against torch's Bernoulli through binary_cross_entropy_with_logits.

And with `--layouts`: the conv model (channels 32, 64) and the `--preset mnist` hvae with
their weights in NCHW against channels-last (NHWC, model.memory_format): a training step's
forward and backward on 64 binary 28 x 28 images, and `vaekit.log_likelihood` on 50 of them
(k = 200 for the conv model, 20 for the hvae), alternated, best of 4 (seconds).

    python benchmarks/step_parts.py
    python benchmarks/step_parts.py --layouts --threads 1

Prints one JSON object: the times and the ratios (obvious / vaekit).
"""

from __future__ import annotations

import json
import time

import torch
from torch.distributions import Bernoulli, Independent

from vaekit.data import binarize_dynamic
from vaekit.likelihoods import SummedBernoulli
from vaekit.stream import rows


def best_us(fn, reps: int = 40, inner: int = 5) -> float:
    fn()
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t) / inner)
    return best * 1e6


def layouts() -> dict:
    """NCHW / NHWC time ratios of a training step and of importance-sampled evaluation."""
    import vaekit
    from vaekit.model import VAE
    from vaekit.train import objective

    x = (torch.rand(64, 1, 28, 28, generator=torch.Generator().manual_seed(0)) < 0.3).float()
    models = {"conv": (vaekit.Config(arch="conv", channels=[32, 64], latent_dim=16, input_shape=[1, 28, 28],
                                     likelihood="bernoulli"), 200),
              "hvae": (vaekit.Config.preset("mnist", input_shape=[1, 28, 28], likelihood="bernoulli"), 20)}
    out = {}
    for name, (config, k) in models.items():
        torch.manual_seed(0)
        model = VAE.from_config(config)

        def step() -> None:
            objective(model, x.contiguous(memory_format=fmt), config, beta=1.0).bound.mean().backward()

        def score() -> None:
            with torch.no_grad():
                vaekit.log_likelihood(model, x[:50], k=k, batch_size=50)

        for part, fn in (("step", step), ("eval", score)):
            best = {}
            for _ in range(4):
                for fmt in (torch.contiguous_format, torch.channels_last):
                    model.to(memory_format=fmt)
                    model.train(part == "step")
                    t = time.perf_counter()
                    fn()
                    best[fmt] = min(best.get(fmt, float("inf")), time.perf_counter() - t)
            out[f"{name}_{part}_nchw_s"] = round(best[torch.contiguous_format], 4)
            out[f"{name}_{part}_nhwc_s"] = round(best[torch.channels_last], 4)
            out[f"{name}_{part}_ratio"] = round(best[torch.contiguous_format] / best[torch.channels_last], 2)
    return out


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layouts", action="store_true", help="also time conv and hvae models in both memory layouts")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    data = torch.rand(60000, 1, 28, 28)  # (N, 1, 28, 28) MNIST-shaped intensities
    idx = torch.randperm(60000)[:128]
    p = data[idx]  # (128, 1, 28, 28)
    x = (p > 0.5).float()
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(128, 1, 28, 28, requires_grad=True)

    def loglik(dist) -> None:
        dist(Bernoulli(logits=logits, validate_args=False), 3, validate_args=False).log_prob(x).sum().backward()

    out = {
        "gather_x_idx_us": best_us(lambda: data[idx]),
        "gather_index_select_us": best_us(lambda: rows(data, idx)),
        "torch_bernoulli_us": best_us(lambda: torch.bernoulli(p, generator=gen)),
        "binarize_dynamic_us": best_us(lambda: binarize_dynamic(p, gen)),
        "bernoulli_log_prob_fwd_bwd_us": best_us(lambda: loglik(Independent)),
        "summed_bernoulli_fwd_bwd_us": best_us(lambda: loglik(SummedBernoulli)),
        "threads": torch.get_num_threads(),
    }
    out = {k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()}
    out["gather_ratio"] = round(out["gather_x_idx_us"] / out["gather_index_select_us"], 2)
    out["binarize_ratio"] = round(out["torch_bernoulli_us"] / out["binarize_dynamic_us"], 2)
    out["log_prob_ratio"] = round(out["bernoulli_log_prob_fwd_bwd_us"] / out["summed_bernoulli_fwd_bwd_us"], 2)
    if args.layouts:
        out.update(layouts())
    print(json.dumps(out))


if __name__ == "__main__":
    main()
