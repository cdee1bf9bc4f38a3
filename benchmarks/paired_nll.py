"""Two trained runs compared on the same MNIST test images and bits (binarised once with seed
0, as benchmarks/mnist_nll.py scores them): each image's importance-sampled -log p(x) under
both, and the mean of the per-image differences with its standard error. Two models' NLLs
share the images' spread, so their difference is far better determined than each +- says.

    python benchmarks/paired_nll.py runs/stage2-iwae runs/stage2-dreg --k 1000

Prints one JSON line: each run's NLL, the difference (first minus second) and its standard error.
"""

from __future__ import annotations

import argparse
import json

import torch

import vaekit
from vaekit.evaluate import prepare_eval_data


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("first")
    p.add_argument("second")
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--k", type=int, default=1000)
    p.add_argument("--n", type=int, default=None, help="only the first N test images")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    test = vaekit.load_data("mnist", "test", args.data_dir).x[:args.n]
    nll = {}
    for run in (args.first, args.second):
        model = vaekit.load(run)
        torch.manual_seed(0)
        nll[run] = -vaekit.log_likelihood(model, prepare_eval_data(model, test), k=args.k)  # (N,) nats
    d = nll[args.first] - nll[args.second]
    print(json.dumps({"first": args.first, "second": args.second, "k": args.k, "n": len(d),
                      "nll_first": round(float(nll[args.first].mean()), 3),
                      "nll_second": round(float(nll[args.second].mean()), 3),
                      "first_minus_second": round(float(d.mean()), 4), "se": round(float(d.std() / len(d) ** 0.5), 4)}))


if __name__ == "__main__":
    main()
