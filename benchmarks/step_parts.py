"""The parts of a training step that vaekit does differently from the obvious code, each
timed against that code on a 128-image MNIST-shaped batch (best of many, microseconds):

- gathering the batch: `x.index_select(0, idx)` (stream.rows) against `x[idx]`;
- dynamic binarisation: `1[u < p]` (data.binarize_dynamic) against `torch.bernoulli(p)`;
- the Bernoulli log-likelihood, forward and backward: `sum x*l - sum softplus(l)`
  (likelihoods.SummedBernoulli) against torch's Bernoulli through binary_cross_entropy_with_logits.

    python benchmarks/step_parts.py

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


def main() -> None:
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
    print(json.dumps(out))


if __name__ == "__main__":
    main()
