"""Does bf16 mixed precision (`--amp`) cost likelihood? The same model, data, seed and budget
trained in float32 and with `--amp`, side by side, each scored in float32 by importance
sampling on the same fixed-seed binarised test images (the protocol of
../shared/BENCHMARKS.md at a small budget). A third run, float32 with another seed, is the
yardstick: two float32 runs differ too (initialisation, batch order, noise), and bf16 only
costs something if it moves the NLL by more than that. Three models: the pytorch/examples-sized MLP
(784-400-20), the conv model (channels 32,64) and the `--preset mnist` hierarchical VAE.

    python benchmarks/amp_quality.py --data-dir ../shared/data/mnist            # cuda if present, else cpu
    python benchmarks/amp_quality.py --n 2000 --eval-n 200 --models mlp          # a smoke run

On a CPU, `--amp` needs AMX or AVX512-BF16 (vaekit says so otherwise). One JSON line per
(model, precision) and one per model with the differences; `train_s` is context only (use
device_speed.py and mnist_hvae.py --speed for speed, measured on a quiet machine). The
standard errors are over test images (paired: the same images for both runs); they do not
include run-to-run training noise, which is what the control seed measures.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from datetime import date

import torch

import vaekit
from vaekit.evaluate import log_likelihood, prepare_eval_data

MODELS = {
    "mlp-784-400-20": lambda **kw: vaekit.Config(hidden=[400], latent_dim=20, **kw),
    "conv-32-64-16": lambda **kw: vaekit.Config(arch="conv", channels=[32, 64], latent_dim=16, **kw),
    "hvae-preset": lambda **kw: vaekit.Config.preset("mnist", **kw),
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--device", default="auto")
    p.add_argument("--n", type=int, default=6400, help="training images (the first N)")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--eval-k", type=int, default=50)
    p.add_argument("--eval-n", type=int, default=500, help="test images scored (the first N)")
    p.add_argument("--models", nargs="+", choices=list(MODELS), default=list(MODELS))
    p.add_argument("--control-seed", type=int, default=1, help="seed of the second float32 run (the yardstick)")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    train = vaekit.load_data("mnist", "train", args.data_dir).x[:args.n]
    test = vaekit.load_data("mnist", "test", args.data_dir).x[:args.eval_n]
    for name in args.models:
        scores = {}
        for amp, seed in ((False, 0), (True, 0), (False, args.control_seed)):
            config = MODELS[name](epochs=args.epochs, kl_warmup=min(1.0, args.epochs / 4), likelihood="bernoulli",
                                  binarize="dynamic", val_fraction=0.0, patience=0, progress=False, seed=seed,
                                  device=args.device, amp=amp)
            t = time.perf_counter()
            model = vaekit.fit(train, config)
            train_s = time.perf_counter() - t
            torch.manual_seed(0)  # the same importance samples' noise for both precisions
            ll = log_likelihood(model, prepare_eval_data(model, test), k=args.eval_k, batch_size=50)  # (n,)
            scores[amp, seed] = ll
            print(json.dumps({"model": name, "amp": amp, "seed": seed, "epochs": args.epochs, "train_images": len(train),
                              "test_nll": round(-ll.mean().item(), 3),
                              "test_nll_se": round(ll.std().item() / len(ll) ** 0.5, 3),
                              "eval_k": args.eval_k, "n": len(ll), "train_s": round(train_s, 1)}), flush=True)
        # the same images, so the paired difference's own standard error is the one that matters
        base = scores[False, 0]
        diffs = {"amp_minus_fp32": scores[True, 0] - base, "fp32_seed_minus_seed0": scores[False, args.control_seed] - base}
        print(json.dumps({"model": name, **{f"nll_{key}": round(-d.mean().item(), 3) for key, d in diffs.items()},
                          **{f"se_{key}": round(d.std().item() / len(d) ** 0.5, 3) for key, d in diffs.items()}}),
              flush=True)
    print(json.dumps({"date": date.today().isoformat(), "device": str(model.device), "threads": torch.get_num_threads(),
                      "cpu_bf16": vaekit.distributed.cpu_bf16(), "machine": platform.processor() or platform.machine(),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
