"""Training throughput on one device, per way of running the step:

  in-memory fp32 | in-memory + --amp (CUDA, or a CPU with AMX / AVX512-BF16) | in-memory + --compile |
  in-memory + --amp --compile | streamed .npy (fp32)
  and, for the conv model, in-memory in NCHW layout (--no-channels-last) against the default NHWC

for the MNIST MLP (784-256-256-16, Bernoulli, dynamic binarisation), the conv model
(channels 32,64) and the IWAE paper's model trained with the IWAE objective, k = 50, batch 128 (and 1024 on CUDA), one epoch of `--n` examples each after a
warm-up run (which also absorbs torch.compile's compile time). Also reports the process's
peak RSS. Results: one JSON line per row, then one line describing the machine.

    python benchmarks/device_speed.py --device cuda            # on a GPU machine
    python benchmarks/device_speed.py --device cpu --quick     # seconds: a smoke run
    python benchmarks/device_speed.py --device cpu --n 6000 --models iwae50-784-200-200-50
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

import vaekit
from vaekit.distributed import cpu_bf16

from eval_speed import mm_rate

MODELS = {"mlp-784-256-256-16": {"hidden": [256, 256], "latent_dim": 16},
          "conv-32-64-16": {"arch": "conv", "channels": [32, 64], "latent_dim": 16},
          # the IWAE paper's model trained with k = 50: the decoder runs on 50 x batch rows
          "iwae50-784-200-200-50": {"hidden": [200, 200], "latent_dim": 50, "activation": "tanh",
                                    "objective": "iwae", "k": 50}}


def peak_rss_mb() -> float | None:
    try:
        return next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM:")) / 1024
    except OSError:
        return None


def load(data_dir: str, n: int) -> torch.Tensor:
    try:
        return vaekit.load_data("mnist", "train", data_dir).x[:n]
    except vaekit.errors.VaekitError:
        return torch.rand(n, 1, 28, 28)  # same shapes and arithmetic without the files


def run(data, device: str, model: dict, batch: int, **flags) -> float:
    config = vaekit.Config(**model, epochs=1, batch_size=batch, val_fraction=0.0, patience=0, progress=False,
                           device=device, **flags)
    vaekit.fit(data, config)  # warm-up (and compile)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t = time.perf_counter()
    vaekit.fit(data, config)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(data.x if hasattr(data, "x") else data) / (time.perf_counter() - t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--device", default="auto")
    p.add_argument("--n", type=int, default=60000)
    p.add_argument("--quick", action="store_true", help="2,000 examples, the MLP only, no compile")
    p.add_argument("--no-compile", action="store_true", help="leave out the compiled way (its compile takes minutes on a CPU)")
    p.add_argument("--models", default=",".join(MODELS), help=f"comma-separated, from {', '.join(MODELS)}")
    args = p.parse_args()
    models = [m for m in args.models.split(",") if m]
    unknown = sorted(set(models) - set(MODELS))
    if unknown:
        p.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    device = "cuda" if args.device == "auto" and torch.cuda.is_available() else \
        ("cpu" if args.device == "auto" else args.device)
    n = 2000 if args.quick else args.n
    x = load(args.data_dir, n)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.npy"
        np.save(path, x.numpy())
        streamed = vaekit.load_data(str(path), stream=True)
        ways = {"in-memory": (x, {}), "streamed": (streamed, {})}
        if device.startswith("cuda") or cpu_bf16():
            ways["amp"] = (x, {"amp": True})
        if not (args.quick or args.no_compile):
            ways["compile"] = (x, {"compile": True})
            if "amp" in ways:
                ways["amp+compile"] = (x, {"amp": True, "compile": True})
        batches = (128, 1024) if device.startswith("cuda") else (128,)
        for name in models:
            model = MODELS[name]
            if args.quick and not name.startswith("mlp"):
                continue
            for batch in batches:
                row = {"model": name, "batch": batch, "device": device}
                for way, (data, flags) in ways.items():
                    row[f"{way}_ex_per_s"] = round(run(data, device, model, batch, **flags))
                for way in ("amp", "compile", "amp+compile"):
                    if f"{way}_ex_per_s" in row:
                        row[f"{way}_speedup"] = round(row[f"{way}_ex_per_s"] / row["in-memory_ex_per_s"], 3)
                if model.get("arch") == "conv":  # the layout conv models train in by default, against NCHW
                    row["in-memory-nchw_ex_per_s"] = round(run(x, device, model, batch, channels_last=False))
                    row["channels_last_speedup"] = round(row["in-memory_ex_per_s"] / row["in-memory-nchw_ex_per_s"], 3)
                print(json.dumps(row), flush=True)
    gpu = torch.cuda.get_device_name(0) if device.startswith("cuda") else None
    mm = {} if device.startswith("cuda") else {
        "mm_gflops_fp32": round(mm_rate() / 1e9), "mm_gflops_bf16": round(mm_rate(dtype=torch.bfloat16) / 1e9)}
    print(json.dumps({"date": date.today().isoformat(), "n": n, "gpu": gpu, "cpu_bf16": cpu_bf16(), **mm, "threads": torch.get_num_threads(),
                      "cpus": os.cpu_count(), "machine": platform.machine(), "torch": torch.__version__,
                      "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
