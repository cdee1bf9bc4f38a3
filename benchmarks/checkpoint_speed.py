"""Cost of one training checkpoint: size on disk, time to write (fsync included) and to
restore, for the default model (MLP 256-256, d = 16) on MNIST-sized input (1 x 28 x 28).

    python benchmarks/checkpoint_speed.py            # 10 saves, median reported

A checkpoint holds the weights, the best weights, Adam's two moments and the RNG states.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from vaekit import resume
from vaekit.config import Config
from vaekit.model import VAE


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cfg = Config(input_shape=[1, 28, 28], likelihood="bernoulli")
    model = VAE.from_config(cfg)
    opt = torch.optim.Adam(model.parameters())
    (-model.encode(torch.rand(8, 1, 28, 28)).mean.sum()).backward()
    opt.step()  # Adam's moments exist
    best = {k: v.clone() for k, v in model.state_dict().items()}
    with tempfile.TemporaryDirectory() as d:
        run, times = Path(d), []
        for i in range(args.repeats):
            t = time.perf_counter()
            folder = resume.save(run, model, opt, torch.Generator(), resume.LoopState(epoch=i + 1), best, cfg, "-")
            times.append(time.perf_counter() - t)
        size = sum(p.stat().st_size for p in folder.iterdir())
        t = time.perf_counter()
        resume.restore(run, model, opt, torch.Generator(), cfg, "-")
        restore = time.perf_counter() - t
    n = sum(p.numel() for p in model.parameters())
    print(f"parameters {n:,}; checkpoint {size / 1e6:.1f} MB; save median {sorted(times)[len(times) // 2] * 1e3:.0f} ms "
          f"(of {args.repeats}); restore {restore * 1e3:.0f} ms")


if __name__ == "__main__":
    main()
