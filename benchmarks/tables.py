"""Synthetic tables, vaekit vs ctgan's TVAE at the same epochs: quality (SDMetrics), detection
ROC AUC, privacy figure and fit time, on the shared penguins and bank-marketing tables.

    python3 -m venv /work/bench-venv && /work/bench-venv/bin/pip install torch==2.13.0 ctgan sdmetrics safetensors tqdm
    PYTHONPATH=src nice -n 15 /work/bench-venv/bin/python benchmarks/tables.py --epochs 300

ctgan (Business Source Licence) lives only in that separate venv; vaekit comes from src/.
Both models see the same rows (rows with a missing value are dropped, because ctgan 0.12's
TVAE fails to sample tables that had gaps), the same epoch budget and the same number of
CPU threads; both are scored by vaekit.table_metrics on as many synthetic rows as real rows,
each figure averaged over `--seeds` fits. vaekit's early stopping may end a fit before the
budget; the epochs it ran are reported.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from vaekit.table_io import read_table
from vaekit.table_metrics import evaluate_table
from vaekit.tables import infer_schema
from vaekit.tabular import fit_table, sample_table, table_config

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
TABLES = {"penguins": DATA / "penguins" / "penguins.csv", "bank": DATA / "bank-marketing" / "bank.csv"}
KEYS = ("quality", "column_shapes", "column_pair_trends", "detection_auc", "privacy_closer_than_median",
        "exact_copies", "fit_seconds", "epochs_run")


def run_vaekit(real: pd.DataFrame, epochs: int, seed: int, encoding: str, **config) -> dict:
    t = time.perf_counter()
    model = fit_table(real, table_config(epochs=epochs, seed=seed, progress=False, **config), encoding=encoding)
    fit_s = time.perf_counter() - t
    synth = sample_table(model, len(real), seed=seed)
    return {**evaluate_table(synth, real, schema=model.schema, seed=seed), "fit_seconds": fit_s,
            "epochs_run": len(model.history.epochs)}


def run_tvae(real: pd.DataFrame, epochs: int, seed: int) -> dict:
    from ctgan import TVAE

    schema = infer_schema(real)
    discrete = [c.name for c in schema.columns if c.kind in ("categorical", "boolean")]
    torch.manual_seed(seed)
    np.random.seed(seed)
    t = time.perf_counter()
    model = TVAE(epochs=epochs, cuda=False)
    model.fit(real, discrete_columns=discrete)
    fit_s = time.perf_counter() - t
    synth = model.sample(len(real))[real.columns].astype(real.dtypes.to_dict())
    return {**evaluate_table(synth, real, schema=schema, seed=seed), "fit_seconds": fit_s, "epochs_run": epochs}


def mean_of(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in KEYS}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=300)
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--tables", default="penguins,bank")
    p.add_argument("--encoding", default="quantile", choices=["quantile", "gmm"])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, help="vaekit: override table_config's batch size")
    p.add_argument("--lr", type=float, help="vaekit: override table_config's learning rate")
    p.add_argument("--models", default="vaekit,tvae", help="which to run: vaekit, tvae or both (comma-separated)")
    p.add_argument("--json", help="also write the results here")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # torch imports its compiler on the first optimizer:
    # pay that (about 5 s) here, not inside whichever fit is timed first
    results = []
    for name in args.tables.split(","):
        real = read_table(TABLES[name]).dropna().reset_index(drop=True)
        models = {}
        if "vaekit" in args.models:
            overrides = {k: v for k, v in (("batch_size", args.batch_size), ("lr", args.lr)) if v is not None}
            models["vaekit"] = lambda s: run_vaekit(real, args.epochs, s, args.encoding, **overrides)
        if "tvae" in args.models:
            models["TVAE (ctgan)"] = lambda s: run_tvae(real, args.epochs, s)
        for label, fn in models.items():
            row = {"table": name, "rows": len(real), "model": label, **mean_of([fn(s) for s in range(args.seeds)])}
            results.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, {args.threads} thread(s), "
          f"epochs {args.epochs}, seeds {args.seeds}, encoding {args.encoding}\n")
    print("| table | model | quality | shapes | pair trends | detection AUC | privacy | copies | fit s | epochs run |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        print(f"| {r['table']} ({r['rows']} rows) | {r['model']} | {r['quality']:.3f} | {r['column_shapes']:.3f} | "
              f"{r['column_pair_trends']:.3f} | {r['detection_auc']:.3f} | {r['privacy_closer_than_median']:.3f} | "
              f"{r['exact_copies']:.0f} | {r['fit_seconds']:.1f} | {r['epochs_run']:.0f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
