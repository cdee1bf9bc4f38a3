"""Where a fresh Bernoulli decoder starts: its output bias at the data's log-odds (what fit()
does) against PyTorch's default start near zero logits, side by side, on dynamically binarised
MNIST. The models are the IWAE paper's (tanh): one stochastic layer (784-200-200-50) and two
(the ladder, 784-100-100-100 / 100-50-50-50). Same seed, same batches; the KL weight rises from
0 to 1 over the first epochs (--kl-warmup), as in benchmarks/mnist_nll.py.

Prints, per model and start, each epoch's train loss and KL, and the test ELBO (k = 1) and
NLL (k = --eval-k) on the first --eval-n test images (binarised once with seed 0).

    python benchmarks/output_start.py --data-dir ../shared/data/mnist
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import vaekit
from vaekit.evaluate import evaluate, prepare_eval_data
from vaekit.likelihoods import Bernoulli

MODELS = {
    "one layer": dict(hidden=[200, 200], latent_dim=50),
    "ladder": dict(arch="ladder", hidden=[100, 100], latent_dims=[100, 50], ladder_hidden=[50, 50]),
}


def run(train, test, model_kw: dict, args, data_start: bool) -> dict:
    torch.manual_seed(0)
    config = vaekit.Config(activation="tanh", likelihood="bernoulli", binarize="dynamic", epochs=args.epochs,
                           batch_size=100, lr=1e-3, kl_warmup=args.kl_warmup, val_fraction=0, patience=0,
                           progress=False, **model_kw)
    original = Bernoulli.start_output
    if not data_start:  # the baseline: the decoder's last layer as torch initialises it
        Bernoulli.start_output = lambda self, layer, mean: False
    try:
        t = time.perf_counter()
        model = vaekit.fit(train, config)
        seconds = time.perf_counter() - t
    finally:
        Bernoulli.start_output = original
    r = evaluate(model, prepare_eval_data(model, test.x[:args.eval_n]), k=args.eval_k)
    return {"train_loss": [round(v, 2) for v in model.history.column("train_loss")],
            "train_kl": [round(v, 2) for v in model.history.column("train_kl")],
            "test_elbo": round(r["elbo"], 2), "test_nll": round(r["nll"], 2), "nll_se": round(r["nll_se"], 2),
            "active_units": r["active_units"], "train_seconds": round(seconds)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--kl-warmup", type=float, default=5)
    p.add_argument("--eval-k", type=int, default=200)
    p.add_argument("--eval-n", type=int, default=2000)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    train = vaekit.load_data("mnist", "train", args.data_dir)
    test = vaekit.load_data("mnist", "test", args.data_dir)
    for name, kw in MODELS.items():
        for data_start in (False, True):
            row = run(train, test, kw, args, data_start)
            print(json.dumps({"model": name, "start": "data log-odds" if data_start else "torch default",
                              "epochs": args.epochs, "kl_warmup": args.kl_warmup, **row}), flush=True)


if __name__ == "__main__":
    main()
