"""Importance-sampled log-likelihood throughput: vaekit's estimator against pythae's
`VAE.get_nll`, on the same architecture (the pytorch/examples VAE, 784-400-20, Bernoulli) and
the same k, side by side in one process, plus the machine's matrix-multiply rate measured in
the same run (2048 x 2048 float32 `torch.mm`) as the ceiling.

    pip install pythae            # benchmark-only dependency
    python benchmarks/eval_speed.py --k 1000

Reports examples x k per second for each (vaekit eager and with `compile=True`; the one-off
compile is done before timing), the ratios, and the achieved FLOP rate of vaekit's estimator
as a fraction of the mm rate. Runs alternate (vaekit, pythae, vaekit, ...) and the
best of each is kept, because these machines are noisy.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date

import torch
from torch import nn

import vaekit
from vaekit.evaluate import log_likelihood
from vaekit.likelihoods import Bernoulli
from vaekit.nets import MLP
from vaekit.priors import StandardNormal

D, H, Z = 784, 400, 20  # the pytorch/examples VAE


def mm_rate(n: int = 2048, reps: int = 10, dtype: torch.dtype = torch.float32) -> float:
    """The best of `reps` n x n matmuls, in FLOP/s: the machine's rate that fractions refer to."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def flops_per_sample() -> float:
    """Decoder matmuls per (example, importance sample); the encoder runs once per example."""
    return 2 * (Z * H + H * D)


def vaekit_model() -> vaekit.VAE:
    return vaekit.VAE(MLP((1, 28, 28), [H], (2 * Z,)), MLP((Z,), [H], (1, 1, 28, 28)), StandardNormal(Z),
                      Bernoulli((1, 28, 28)), Z, (1, 28, 28))


def pythae_model(ours: vaekit.VAE):
    from pythae.models import VAE, VAEConfig
    from pythae.models.base.base_utils import ModelOutput
    from pythae.models.nn import BaseDecoder, BaseEncoder

    class Enc(BaseEncoder):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc21, self.fc22 = nn.Linear(D, H), nn.Linear(H, Z), nn.Linear(H, Z)

        def forward(self, x):
            h = torch.relu(self.fc1(x.reshape(-1, D)))
            return ModelOutput(embedding=self.fc21(h), log_covariance=self.fc22(h))

    class Dec(BaseDecoder):
        def __init__(self):
            super().__init__()
            self.fc3, self.fc4 = nn.Linear(Z, H), nn.Linear(H, D)

        def forward(self, z):
            out = torch.sigmoid(self.fc4(torch.relu(self.fc3(z))))
            return ModelOutput(reconstruction=out.reshape(-1, 1, 28, 28))

    cfg = VAEConfig(input_dim=(1, 28, 28), latent_dim=Z, reconstruction_loss="bce")
    return VAE(cfg, encoder=Enc(), decoder=Dec()).eval()


def measure(args) -> dict:
    """One side-by-side run (args: data_dir, n, n_pythae, k, rounds) -> the result row."""
    torch.manual_seed(0)
    try:
        x = vaekit.load_data("mnist", "test", args.data_dir).x[:args.n]
    except vaekit.errors.VaekitError:
        x = torch.rand(args.n, 1, 28, 28)
    x = torch.bernoulli(x, generator=torch.Generator().manual_seed(0))
    ours = vaekit_model().eval()
    theirs = pythae_model(ours)

    log_likelihood(ours, x[:100], k=args.k, compile=True)  # the one-off compile is not timed
    rate = mm_rate()
    best_v, best_c, best_p = 0.0, 0.0, 0.0
    for _ in range(args.rounds):
        t = time.perf_counter()
        log_likelihood(ours, x, k=args.k)
        best_v = max(best_v, args.n * args.k / (time.perf_counter() - t))
        t = time.perf_counter()
        log_likelihood(ours, x, k=args.k, compile=True)
        best_c = max(best_c, args.n * args.k / (time.perf_counter() - t))
        t = time.perf_counter()
        with torch.no_grad():
            theirs.get_nll(x[:args.n_pythae], n_samples=args.k, batch_size=100)
        best_p = max(best_p, args.n_pythae * args.k / (time.perf_counter() - t))
    row = {
        "date": date.today().isoformat(), "k": args.k, "model": "784-400-20 relu, Bernoulli",
        "vaekit_samples_per_s": round(best_v), "vaekit_compiled_samples_per_s": round(best_c),
        "pythae_samples_per_s": round(best_p), "ratio_vs_pythae": round(best_v / best_p, 2),
        "compiled_ratio_vs_pythae": round(best_c / best_p, 2), "mm_gflops": round(rate / 1e9, 1),
        "fraction_of_mm": round(best_v * flops_per_sample() / rate, 3),
        "compiled_fraction_of_mm": round(best_c * flops_per_sample() / rate, 3),
        "threads": torch.get_num_threads(), "cpus": os.cpu_count(), "machine": platform.machine(),
        "torch": torch.__version__,
    }
    return row


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--n", type=int, default=200, help="examples for vaekit")
    p.add_argument("--n-pythae", type=int, default=20, help="examples for pythae (it loops per example)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data-dir", default="../shared/data/mnist")
    args = p.parse_args()
    print(json.dumps(measure(args)))


if __name__ == "__main__":
    main()
