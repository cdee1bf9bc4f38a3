"""MNIST test NLL of the IWAE paper's one-stochastic-layer model (784-200-200-50, tanh,
Bernoulli), or with `--arch ladder` its two-stochastic-layer model (784-100-100-z1 100,
z1-50-50-z2 50; inference top-down as a ladder), the protocol of ../shared/BENCHMARKS.md:
dynamic binarisation in training, the test set binarised once with seed 0, -log p(x) by
importance sampling with k samples.

    python benchmarks/mnist_nll.py --data-dir ../shared/data/mnist --epochs 200
    python benchmarks/mnist_nll.py --data-dir ../shared/data/mnist --objective iwae --k 50
    python benchmarks/mnist_nll.py --epochs 1000 --out runs/elbo --resume   # again after a stop
    python benchmarks/mnist_nll.py --objective iwae --k 50 --dreg           # doubly reparameterised gradients
    python benchmarks/mnist_nll.py --objective iwae --k 50 --amp            # bf16 steps (AMX CPU, CUDA)
    python benchmarks/mnist_nll.py --prior vamp --pseudo-inputs 500         # the VampPrior row
    python benchmarks/mnist_nll.py --objective iwae --k 50 --init-from runs/elbo   # a second stage
    python benchmarks/mnist_nll.py --arch ladder --objective iwae --k 50    # two stochastic layers

With --resume the run continues from its latest checkpoint (train_seconds then counts
only the last sitting; metrics.jsonl in the run folder has every epoch's seconds).

Prints one JSON line and appends it to --results (default bench-out/mnist_nll.jsonl).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from datetime import date
from pathlib import Path

import torch

import vaekit
from vaekit.evaluate import evaluate, prepare_eval_data
from vaekit.train import History


MODELS = {"mlp": "784-200-200-50 tanh, Bernoulli",
          "ladder": "784-100-100-100 / 100-50-50-50 tanh, two stochastic layers (ladder), Bernoulli"}


def train_or_resume(train, config: vaekit.Config, out: Path, resume: bool, init: Path | None = None):
    """fit() into `out`. With `resume`: continue from the latest checkpoint, or load the run
    if it already finished, so one command carries a long run over several sittings to its
    score (checkpoints every config.checkpoint_minutes). With `init`: start from that run's
    weights (a second stage, e.g. IWAE after ELBO training) instead of a random model."""
    device = config.device if config.device != "auto" else None
    if resume and (out / "manifest.json").is_file():
        model = vaekit.load(out, device=device)
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip()]
        model.history = History(rows)
        return model
    start = None
    if init is not None:  # fit() refuses a model of another architecture
        start = vaekit.load(init, device=device)
        config = config.replace(init_from=str(init))
    return vaekit.fit(train, config, out=out, force=not resume, resume=resume, model=start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--arch", choices=["mlp", "ladder"], default="mlp",
                   help="mlp: one stochastic layer (784-200-200-50); ladder: two (100 and 50, Burda et al. 2016)")
    p.add_argument("--objective", choices=["elbo", "iwae"], default="elbo")
    p.add_argument("--k", type=int, default=1, help="IWAE samples in training")
    p.add_argument("--dreg", action="store_true", help="IWAE with doubly reparameterised gradients (Tucker et al. 2019)")
    p.add_argument("--prior", choices=["normal", "vamp", "mog"], default="normal")
    p.add_argument("--pseudo-inputs", type=int, default=500, help="VampPrior pseudo-inputs (mixture components for mog)")
    p.add_argument("--kl-warmup", type=float, default=0.0, help="epochs over which the KL weight rises from 0 to 1")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ema", type=float, default=0.0, help="keep, score and save a moving average of the weights "
                   "with this decay (e.g. 0.999; 0 = off)")
    p.add_argument("--eval-k", type=int, default=5000)
    p.add_argument("--eval-n", type=int, default=None, help="score only the first N test images (iterating)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--amp", action="store_true", help="bf16 autocast of the training step (CUDA, or a CPU with "
                   "AVX512-BF16/AMX); scoring stays float32")
    p.add_argument("--compile", action="store_true", help="torch.compile the training step")
    p.add_argument("--out", default=None,
                   help="run folder (default bench-out/mnist-[ladder-]<objective>-k<k>-<prior>-e<epochs>)")
    p.add_argument("--results", default="bench-out/mnist_nll.jsonl")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0, help="save the training state every M minutes")
    p.add_argument("--init-from", type=Path, default=None, help="start from this finished run's weights (e.g. "
                   "IWAE k = 50 after ELBO training, Burda et al. 2016, section 5.2); the row then counts both stages")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its latest checkpoint "
                   "(a long run spread over several sittings; bit-identical on CPU)")
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    train = vaekit.load_data("mnist", "train", args.data_dir)
    test = vaekit.load_data("mnist", "test", args.data_dir)
    # the IWAE paper's architectures: one layer 784-200-200-50; two layers 784-100-100-100 then 100-50-50-50
    shape = {"latent_dim": 50, "hidden": [200, 200]} if args.arch == "mlp" else \
        {"arch": "ladder", "latent_dims": [100, 50], "hidden": [100, 100], "ladder_hidden": [50, 50]}
    config = vaekit.Config(
        **shape, activation="tanh", likelihood="bernoulli", binarize="dynamic",
        objective=args.objective, k=args.k, dreg=args.dreg, prior=args.prior, kl_warmup=args.kl_warmup,
        prior_components=args.pseudo_inputs if args.prior != "normal" else 0,
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        lr_schedule="cosine", lr_warmup=1.0, lr_final=0.05, val_fraction=0.0, patience=0,
        device=args.device, seed=0, progress=False,
        checkpoint_minutes=args.checkpoint_minutes, ema=args.ema, amp=args.amp, compile=args.compile)
    arch = "" if args.arch == "mlp" else f"{args.arch}-"
    name = f"{arch}{args.objective}{'-dreg' if args.dreg else ''}-k{args.k}-{args.prior}-e{args.epochs}"
    out = Path(args.out or f"bench-out/mnist-{name}")
    t0 = time.perf_counter()
    model = train_or_resume(train, config, out, args.resume, args.init_from)
    train_s = time.perf_counter() - t0

    x = prepare_eval_data(model, test.x[:args.eval_n] if args.eval_n else test.x)  # fixed-seed bits
    torch.manual_seed(0)
    t1 = time.perf_counter()
    res = evaluate(model, x, k=args.eval_k, batch_size=50)
    eval_s = time.perf_counter() - t1
    last = model.history.epochs[-1]
    row = {
        "date": date.today().isoformat(), "model": MODELS[args.arch], "objective": args.objective, "prior": args.prior,
        "prior_components": config.prior_components, "kl_warmup": args.kl_warmup,
        "train_k": args.k, "dreg": args.dreg, "epochs": len(model.history.epochs), "batch_size": args.batch_size, "lr": args.lr, "ema": args.ema,
        "amp": args.amp, "compile": args.compile, "init_from": str(args.init_from) if args.init_from else None,
        "schedule": "1 epoch warm-up, cosine to 5%", "test_nll": round(res["nll"], 3), "test_nll_se": round(res["nll_se"], 3),
        "test_elbo": round(res["elbo"], 3), "active_units": res["active_units"], "eval_k": args.eval_k, "n": res["n"],
        "final_train_loss": round(last["train_loss"], 3), "train_seconds": round(train_s),
        "train_seconds_all_epochs": round(sum(e["seconds"] for e in model.history.epochs)), "eval_seconds": round(eval_s),
        "device": str(model.device), "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "torch": torch.__version__, "run": str(out),
    }
    line = json.dumps(row)
    print(line)
    Path(args.results).parent.mkdir(parents=True, exist_ok=True)
    with open(args.results, "a") as f:
        f.write(line + "\n")


if __name__ == "__main__":
    main()
