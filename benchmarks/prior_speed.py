"""Mixture priors: vaekit's log-density by matrix products against torch's
`MixtureSameFamily.log_prob`, side by side in one process, on the MNIST model of the
VampPrior row (784-200-200-50 tanh, Bernoulli, K = 500 pseudo-inputs, batch 100).

    python benchmarks/prior_speed.py                 # ELBO and IWAE k = 50 training steps, IS scoring
    python benchmarks/prior_speed.py --rounds 5 --threads 2

Each way runs the same steps on the same random binary batch; rounds alternate the ways so
machine noise hits both. Prints ms per step for each, and torch / vaekit (above 1: vaekit
is faster). The values agree to float32 rounding (tests/test_variants.py).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date

import torch
from torch.distributions import MixtureSameFamily

from vaekit import Config, VAE
from vaekit.evaluate import log_likelihood
from vaekit.objectives import elbo, iwae
from vaekit.priors import GaussianMixture


def timed(fn, steps: int) -> float:
    fn()  # warm-up: first-call allocations
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--components", type=int, default=500)
    p.add_argument("--prior", choices=["vamp", "mog"], default="vamp")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=None)
    a = p.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = Config(latent_dim=50, hidden=[200, 200], activation="tanh", likelihood="bernoulli", input_shape=[1, 28, 28],
                 prior=a.prior, prior_components=a.components)
    model = VAE.from_config(cfg)
    opt = torch.optim.Adam(model.parameters(), 1e-3)
    x = (torch.rand(100, 1, 28, 28) < 0.3).float()  # (B, 1, 28, 28)

    def train(objective):
        def step():
            loss = -objective(model, x).bound.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return step

    def score():
        log_likelihood(model, x[:20], k=1000, batch_size=20)

    cases = {"ELBO step": (train(elbo), 20), "IWAE k=50 step": (train(lambda m, b: iwae(m, b, k=50)), 3),
             "IS score, 20 images x k=1000": (score, 2)}
    ways = {"torch": MixtureSameFamily.log_prob, "vaekit": GaussianMixture.log_prob}
    best = {(c, w): float("inf") for c in cases for w in ways}
    for _ in range(a.rounds):
        for w, lp in ways.items():
            GaussianMixture.log_prob = lp  # the same prior object, only its density swapped
            for c, (fn, steps) in cases.items():
                best[c, w] = min(best[c, w], timed(fn, steps))
    GaussianMixture.log_prob = ways["vaekit"]
    for c in cases:
        row = dict(case=c, prior=a.prior, components=a.components, torch_ms=round(best[c, "torch"], 2),
                   vaekit_ms=round(best[c, "vaekit"], 2), ratio=round(best[c, "torch"] / best[c, "vaekit"], 2),
                   threads=torch.get_num_threads(), machine=platform.processor() or platform.machine(),
                   date=str(date.today()))
        print(json.dumps(row))


if __name__ == "__main__":
    main()
