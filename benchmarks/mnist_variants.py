"""Every variant on MNIST at the same budget, scored the same way: the protocol of
../shared/BENCHMARKS.md (dynamic binarisation in training, the test set binarised once with
seed 0, importance-sampled test NLL). One row per variant, printed as JSON and appended to
--results. Equal epochs, so the rows compare the objectives and parts, not the budgets.

    python benchmarks/mnist_variants.py --epochs 5 --eval-k 1000 --eval-n 2000
    python benchmarks/mnist_variants.py --epochs 1000 --eval-k 5000 --device cuda --variants iwae50 vamp ladder-iwae50
    python benchmarks/mnist_variants.py --epochs 1000 --eval-n 0 --eval-k 5000 --variants vamp --out runs --resume

With --out each variant trains into OUT/<variant>-e<epochs>, checkpointed every 10 minutes;
--resume continues those runs (or scores a finished one), so a long run can span sittings.
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
from mnist_nll import train_or_resume
from vaekit.evaluate import evaluate, prepare_eval_data

BASE = dict(latent_dim=50, hidden=[200, 200], activation="tanh", likelihood="bernoulli", binarize="dynamic",
            lr_schedule="cosine", lr_warmup=1.0, lr_final=0.05, val_fraction=0.0, patience=0, seed=0, progress=False)
VARIANTS = {  # name -> Config overrides (the IWAE paper's one- and two-layer models)
    "elbo": {},
    "beta0.5": {"beta": 0.5},
    "iwae5": {"objective": "iwae", "k": 5},
    "iwae10": {"objective": "iwae", "k": 10},
    "iwae50": {"objective": "iwae", "k": 50},
    "wae-mmd": {"objective": "wae-mmd"},
    "vamp": {"prior": "vamp", "prior_components": 500},
    "mog": {"prior": "mog", "prior_components": 10},
    "ladder": {"arch": "ladder", "latent_dims": [100, 50], "ladder_hidden": [100, 100], "kl_warmup": 1.0},
    "ladder-iwae10": {"arch": "ladder", "latent_dims": [100, 50], "ladder_hidden": [100, 100], "objective": "iwae", "k": 10},
    "ladder-iwae50": {"arch": "ladder", "latent_dims": [100, 50], "ladder_hidden": [100, 100], "objective": "iwae", "k": 50},
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--variants", nargs="+", default=["elbo", "iwae10", "wae-mmd", "vamp", "mog", "ladder"],
                   choices=sorted(VARIANTS))
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--eval-k", type=int, default=1000)
    p.add_argument("--eval-n", type=int, default=2000, help="first N test images (all 10,000: 0)")
    p.add_argument("--device", default="auto")
    p.add_argument("--results", default="bench-out/mnist_variants.jsonl")
    p.add_argument("--out", default=None, help="keep each run in OUT/<variant>-e<epochs> (checkpointed)")
    p.add_argument("--resume", action="store_true", help="with --out: continue those runs or score finished ones")
    p.add_argument("--threads", type=int, default=None)
    args = p.parse_args()
    if args.resume and not args.out:
        p.error("--resume needs --out")
    if args.threads:
        torch.set_num_threads(args.threads)
    train = vaekit.load_data("mnist", "train", args.data_dir)
    test = vaekit.load_data("mnist", "test", args.data_dir)
    for name in args.variants:
        config = vaekit.Config(**{**BASE, **VARIANTS[name]}, epochs=args.epochs, batch_size=args.batch_size,
                               device=args.device, checkpoint_minutes=10.0 if args.out else 0.0)
        t0 = time.perf_counter()
        if args.out:
            model = train_or_resume(train, config, Path(args.out) / f"{name}-e{args.epochs}", args.resume)
        else:
            model = vaekit.fit(train, config)
        train_s = time.perf_counter() - t0
        x = prepare_eval_data(model, test.x[:args.eval_n] if args.eval_n else test.x)
        torch.manual_seed(0)
        t1 = time.perf_counter()
        res = evaluate(model, x, k=args.eval_k, batch_size=50)
        row = {"date": date.today().isoformat(), "variant": name, "overrides": VARIANTS[name], "epochs": args.epochs,
               "test_nll": round(res["nll"], 2), "test_nll_se": round(res["nll_se"], 2), "test_elbo": round(res["elbo"], 2),
               "active_units": res["active_units"], "eval_k": args.eval_k, "n": res["n"],
               "train_seconds": round(train_s), "eval_seconds": round(time.perf_counter() - t1),
               "device": str(model.device), "threads": torch.get_num_threads(), "cpus": os.cpu_count(),
               "machine": platform.machine(), "torch": torch.__version__}
        if "kl_per_layer" in res:
            row["kl_per_layer"] = [round(v, 2) for v in res["kl_per_layer"]]
        print(json.dumps(row), flush=True)
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "a") as f:
            f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
