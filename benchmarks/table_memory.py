"""Peak resident memory (VmHWM) of one epoch on a large CSV, read in chunks (`stream=True`)
and read into memory (`stream=False`), each in a fresh process after a warm-up fit.

    python benchmarks/table_memory.py [--blocks 18] [--dir /tmp]

The CSV is `blocks` copies of 50,000 rows of 9 mixed columns (3 long labels, a price with
10% gaps, a float, an integer, a 1-5 rating, a boolean, an ISO date): 18 blocks = 900,000
rows, 164 MB. Prints one JSON line per mode: peak RSS and its rise over the warmed-up
baseline in MB, seconds of fit_table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_csv(path: Path, blocks: int, rows: int = 50_000) -> None:
    import pandas as pd

    rng = np.random.default_rng(0)
    pad = "-" + "x" * 40  # long labels: text-heavy rows, like real exports
    color = rng.choice(["red", "green", "blue", "amber"], rows)
    df = pd.DataFrame({
        "color": np.char.add(color, pad),
        "city": np.char.add(np.char.add("city-", rng.integers(0, 40, rows).astype(str)), pad),
        "shop": np.char.add(np.char.add("shop-", rng.integers(0, 30, rows).astype(str)), pad),
        "price": np.where(rng.random(rows) < 0.1, np.nan, np.round(np.where(color == "red", 100, 20)
                                                                   + rng.gamma(2, 5, rows), 2)),
        "weight": np.round(rng.standard_normal(rows), 6), "count": rng.integers(0, 5000, rows),
        "stars": rng.integers(1, 6, rows), "member": rng.random(rows) < 0.3,
        "day": (np.datetime64("2020-01-01") + rng.integers(0, 1000, rows)).astype(str)})
    header, body = df.to_csv(index=False).split("\n", 1)
    with open(path, "w") as f:
        f.write(header + "\n")
        for _ in range(blocks):
            f.write(body)


def hwm_mb() -> float:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def measure(path: str, mode: str) -> None:
    import pandas as pd
    import torch

    from vaekit.tabular import fit_table, table_config

    torch.set_num_threads(1)
    config = table_config(epochs=1, hidden=[32], latent_dim=4, batch_size=4096, patience=0, progress=False,
                          device="cpu")
    fit_table(pd.read_csv(path, nrows=2000), config)  # warm-up: pandas, the runtime's one-off memory
    baseline = hwm_mb()
    t = time.time()
    model = fit_table(path, config, stream=mode == "stream")
    print(json.dumps({"mode": mode, "baseline_mb": round(baseline), "peak_mb": round(hwm_mb()),
                      "rise_mb": round(hwm_mb() - baseline), "seconds": round(time.time() - t, 1),
                      "val_loss": round(model.history.epochs[-1]["val_loss"], 3),
                      "encoded_width": model.config.input_shape[0]}))  # float32 values a row in the .npy copy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--blocks", type=int, default=18, help="50,000-row blocks in the CSV (18: 164 MB)")
    p.add_argument("--dir", help="where to write the CSV (default: a temporary folder)")
    p.add_argument("--measure", nargs=2, metavar=("CSV", "MODE"), help=argparse.SUPPRESS)  # the child process
    args = p.parse_args()
    if args.measure:
        measure(*args.measure)
        return
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        path = Path(tmp) / "big.csv"
        write_csv(path, args.blocks)
        print(json.dumps({"csv_mb": round(path.stat().st_size / 1e6, 1), "rows": 50_000 * args.blocks}), flush=True)
        for mode in ("stream", "memory"):
            subprocess.run([sys.executable, __file__, "--measure", str(path), mode], check=True)


if __name__ == "__main__":
    main()
