"""Peak resident memory (VmHWM) of one process that loads MNIST's 60,000 training images and
trains the MLP model (784-256-256-16, batch 128) for one epoch on the CPU, in memory.

    python benchmarks/mnist_memory.py --data-dir ../shared/data/mnist

Prints one JSON line: peak RSS in MB, examples, seconds, the epoch's validation loss.
"""

from __future__ import annotations

import argparse
import json
import time

import torch

import vaekit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="../shared/data/mnist")
    p.add_argument("--epochs", type=int, default=1)
    args = p.parse_args()
    t = time.time()
    ds = vaekit.load_data("mnist", "train", args.data_dir)
    config = vaekit.Config(hidden=[256, 256], latent_dim=16, epochs=args.epochs, batch_size=128, progress=False,
                           device="cpu")
    model = vaekit.fit(ds, config)
    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024
    print(json.dumps({"peak_rss_mb": round(hwm), "examples": len(ds.x), "seconds": round(time.time() - t, 1),
                      "val_loss": round(model.history.epochs[-1]["val_loss"], 3), "threads": torch.get_num_threads(),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
