"""Generation and evaluation throughput against pythae, side by side in one process.

Generation: n new MNIST-shaped examples from the prior (the pytorch/examples VAE, 784-400-20,
Bernoulli), as probabilities, through vaekit's `model.sample(n)`, pythae's `NormalSampler`
on the same architecture (one batch of n, its best case), and a bare loop
(`sigmoid(decoder(randn(n, d)))` under no_grad, the floor). Evaluation: the importance-sampled
log-likelihood, vaekit against pythae's `get_nll` (benchmarks/eval_speed.py, imported).
The 2048 x 2048 float32 `torch.mm` rate of the same run gives the ceiling.

    pip install pythae            # benchmark-only dependency
    python benchmarks/sample_speed.py

Prints one JSON row: samples per second for each, the ratios, the fraction of the mm rate.
Rounds alternate (vaekit, pythae, bare, ...) and the best of each is kept: the machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from eval_speed import D, H, Z, measure, mm_rate, pythae_model, vaekit_model


def _best(fn, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def generation(n: int, rounds: int) -> dict:
    ours = vaekit_model().eval()
    theirs = pythae_model(ours)
    from pythae.samplers import NormalSampler

    sampler = NormalSampler(theirs)
    bare = ours.decoder  # the same decoder net, called directly

    def run_bare() -> torch.Tensor:
        with torch.no_grad():
            return torch.sigmoid(bare(torch.randn(n, Z)))  # (n, 1, 1, 28, 28)

    times = {"vaekit": [], "pythae": [], "bare": []}
    for _ in range(rounds):  # interleaved, so a noisy minute hits every contender
        times["vaekit"].append(_best(lambda: ours.sample(n), 1))
        times["pythae"].append(_best(lambda: sampler.sample(num_samples=n, batch_size=n), 1))
        times["bare"].append(_best(run_bare, 1))
    rate = {name: n / min(t) for name, t in times.items()}
    flops = 2 * (Z * H + H * D)  # decoder matmuls per generated example
    mm = mm_rate()
    return {
        "n": n, "vaekit_samples_per_s": round(rate["vaekit"]), "pythae_samples_per_s": round(rate["pythae"]),
        "bare_samples_per_s": round(rate["bare"]), "vaekit_vs_pythae": round(rate["vaekit"] / rate["pythae"], 2),
        "vaekit_vs_bare": round(rate["vaekit"] / rate["bare"], 2), "mm_gflops": round(mm / 1e9, 1),
        "vaekit_fraction_of_mm": round(rate["vaekit"] * flops / mm, 3),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10000, help="examples generated per call")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--k", type=int, default=1000, help="importance samples for the evaluation part")
    p.add_argument("--n-eval", type=int, default=200, help="examples for vaekit's evaluation")
    p.add_argument("--n-pythae", type=int, default=20, help="examples for pythae's get_nll (it loops per example)")
    p.add_argument("--no-eval", action="store_true", help="generation only")
    p.add_argument("--data-dir", default="../shared/data/mnist")
    args = p.parse_args()
    torch.manual_seed(0)
    out = {"generation": generation(args.n, args.rounds)}
    if not args.no_eval:
        out["evaluation"] = measure(argparse.Namespace(data_dir=args.data_dir, n=args.n_eval, n_pythae=args.n_pythae,
                                                       k=args.k, rounds=3))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
