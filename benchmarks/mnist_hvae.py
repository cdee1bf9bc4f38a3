"""MNIST test NLL of the recommended image model, the hierarchical conv VAE of `--preset mnist`
(arch=hvae), on the protocol of ../shared/BENCHMARKS.md: dynamic binarisation in training, the
test set binarised once with a fixed seed, -log p(x) by importance sampling with k samples. The
scoring is the one benchmarks/mnist_nll.py uses (vaekit.evaluate: prepare_eval_data, evaluate).
Also writes a 10x10 grid of prior samples (temperature 1.0) next to the result.

    python benchmarks/mnist_hvae.py --data-dir ../shared/data/mnist                  # the preset, k = 5000
    python benchmarks/mnist_hvae.py --epochs 4 --kl-warmup 1 --eval-k 1000 --eval-n 1000 --threads 1
    python benchmarks/mnist_hvae.py --resume ...            # continue an interrupted run (same options)
    python benchmarks/mnist_hvae.py --scored-run RUN ...     # score a finished run folder again
    python benchmarks/mnist_hvae.py --speed 1280 --threads 1 # seconds per step and per epoch only

Prints one JSON line and appends it to --results (default bench-out/mnist_hvae.jsonl).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from datetime import date
from pathlib import Path

import torch

import vaekit
from vaekit.evaluate import evaluate, prepare_eval_data
from vaekit.sample import write_output


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--epochs", type=int, help="override the preset's epochs (the cosine schedule follows it)")
    p.add_argument("--kl-warmup", type=float, help="override the preset's KL warm-up epochs")
    p.add_argument("--eval-k", type=int, default=5000)
    p.add_argument("--train-n", type=int, default=None, help="train on the first N training images only (a smoke run)")
    p.add_argument("--eval-n", type=int, default=None, help="score only the first N test images (iterating)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--resume", action="store_true", help="continue the interrupted run in --out")
    p.add_argument("--scored-run", help="a finished run folder to score (no training)")
    p.add_argument("--out", default=None, help="run folder (default bench-out/mnist-hvae-e<epochs>)")
    p.add_argument("--results", default="bench-out/mnist_hvae.jsonl")
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True,
                   help="train in NHWC layout (the default; --no-channels-last: NCHW, for comparison)")
    p.add_argument("--amp", action="store_true", help="bf16 mixed precision in training (CUDA, or a CPU with AMX / "
                   "AVX512-BF16); scoring stays float32")
    p.add_argument("--speed", type=int, metavar="N", help="only time one epoch of the preset's loop on the first N "
                   "training images (after one warm-up step) and project it to an epoch of MNIST")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.speed:
        return _speed(args)

    changes = {k: v for k, v in (("epochs", args.epochs), ("kl_warmup", args.kl_warmup)) if v is not None}
    config = vaekit.Config.preset("mnist", **changes, likelihood="bernoulli", binarize="dynamic",
                                  device=args.device, seed=0, progress=False, channels_last=args.channels_last,
                                  amp=args.amp)
    out = Path(args.scored_run or args.out or f"bench-out/mnist-hvae-e{config.epochs}")
    train_s = None
    if args.scored_run:
        model = vaekit.load(out, device=args.device if args.device != "auto" else None)
    else:
        train = vaekit.load_data("mnist", "train", args.data_dir)
        if args.train_n:
            train = train.x[:args.train_n]
        t0 = time.perf_counter()
        model = vaekit.fit(train, config, out=out, force=not args.resume, resume=args.resume)
        train_s = time.perf_counter() - t0
    epochs = model.history.epochs if getattr(model, "history", None) else _metrics(out)

    test = vaekit.load_data("mnist", "test", args.data_dir)
    x = prepare_eval_data(model, test.x[:args.eval_n] if args.eval_n else test.x)  # fixed-seed bits
    torch.manual_seed(0)
    t1 = time.perf_counter()
    res = evaluate(model, x, k=args.eval_k, batch_size=50)
    eval_s = time.perf_counter() - t1
    grid = Path(args.results).parent / f"{out.name}-samples.png"
    grid.parent.mkdir(parents=True, exist_ok=True)
    write_output(model.sample(100, temperature=1.0, generator=torch.Generator().manual_seed(0)), grid, nrow=10)

    c = model.config
    row = {
        "date": date.today().isoformat(), "model": "hvae", "preset": "mnist", "overrides": changes, "train_n": args.train_n,
        "channels": c.channels, "groups": c.groups, "latent_channels": c.latent_channels, "cells": c.cells,
        "latent_dim": model.latent_dim, "params": model.num_parameters(), "epochs": len(epochs),
        "batch_size": c.batch_size, "lr": c.lr, "ema": c.ema, "kl_warmup": c.kl_warmup, "grad_skip": c.grad_skip, "amp": c.amp,
        "seconds_per_epoch": [round(e["seconds"]) for e in epochs],
        "grad_skipped": sum(e.get("grad_skipped", 0) for e in epochs),
        "test_nll": round(res["nll"], 3), "test_nll_se": round(res["nll_se"], 3), "test_elbo": round(res["elbo"], 3),
        "kl_per_layer": [round(v, 2) for v in res["kl_per_layer"]], "eval_k": args.eval_k, "n": res["n"],
        "final_train_loss": round(epochs[-1]["train_loss"], 3) if epochs else None,
        "train_seconds": None if train_s is None else round(train_s), "eval_seconds": round(eval_s),
        "device": str(model.device), "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(), "torch": torch.__version__,
        "run": str(out), "samples": str(grid),
    }
    line = json.dumps(row)
    print(line)
    with open(args.results, "a") as f:
        f.write(line + "\n")


def _speed(args) -> None:
    """The preset's training loop (EMA, schedule and all) on N images, timed; with skipping
    off, the gradient norm of every step is recorded, to see where --grad-skip should sit."""
    from vaekit import train as loop

    train = vaekit.load_data("mnist", "train", args.data_dir)
    config = vaekit.Config.preset("mnist", epochs=1, val_fraction=0.0, likelihood="bernoulli", binarize="dynamic",
                                  device=args.device, progress=False, checkpoint_minutes=0.0, grad_skip=0.0,
                                  channels_last=args.channels_last, amp=args.amp)
    vaekit.fit(train.x[:config.batch_size], config)  # warm-up: allocations, first-call overheads
    norms, clip = [], loop.clip_gradients

    def recording(params, max_norm, norm=None):
        norm = clip(params, max_norm, norm)
        norms.append(float(norm))
        return norm

    loop.clip_gradients = recording
    model = vaekit.fit(train.x[:args.speed], config)
    loop.clip_gradients = clip
    steps = -(-args.speed // config.batch_size)
    from torch.utils.flop_counter import FlopCounterMode

    from vaekit.objectives import elbo

    with FlopCounterMode(display=False) as flops:  # one step's forward and backward, counted by torch
        elbo(model, torch.bernoulli(train.x[:config.batch_size].to(model.device))).bound.mean().backward()
    per_step = model.history.epochs[0]["seconds"] / steps
    row = {"date": date.today().isoformat(), "what": "hvae preset training speed", "images": args.speed,
           "steps": steps, "seconds_per_step": round(per_step, 4),
           "seconds_per_mnist_epoch": round(per_step * -(-57000 // config.batch_size), 1),
           "gflop_per_step": round(flops.get_total_flops() / 1e9, 2), "grad_norms": [round(n) for n in norms], "preset_grad_skip": vaekit.Config.preset("mnist").grad_skip,
           "params": model.num_parameters(), "threads": torch.get_num_threads(), "device": str(model.device),
           "channels_last": config.channels_last, "amp": config.amp,
           "load_average": os.getloadavg()[0], "machine": platform.processor() or platform.machine(),
           "torch": torch.__version__}
    print(json.dumps(row))


def _metrics(run: Path) -> list[dict]:
    path = run / "metrics.jsonl"
    return [json.loads(t) for t in path.read_text().splitlines() if t.strip()] if path.exists() else []


if __name__ == "__main__":
    main()
