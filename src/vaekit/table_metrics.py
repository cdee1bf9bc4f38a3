"""How good is a synthetic table? Three figures, each on real vs synthetic DataFrames:

    quality    SDMetrics' QualityReport score in [0, 1] (the mean of column shapes and
               column-pair trends); higher is better
    detection  ROC AUC of a classifier telling real rows from synthetic ones, 5-fold
               cross-validated (gradient-boosted trees); 0.5 is ideal, 1 means always told apart
    privacy    the share of synthetic rows closer to a training row than the median distance
               from a training row to its nearest other training row (exact copies counted
               separately); lower is more private, near 0.5 for a fresh sample of the same data
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .errors import DataError
from .table_io import text_gaps
from .tables import Schema, infer_schema, require_columns, str_columns, to_numbers

MIN_SCORE_ROWS = 5  # the detection AUC is 5-fold cross-validated: at least one row of each kind per fold

SDTYPES = {"continuous": "numerical", "integer": "numerical", "datetime": "datetime", "boolean": "boolean",
           "categorical": "categorical", "constant": "categorical"}


def evaluate_table(model_or_synthetic, real, n: int | None = None, seed: int = 0,
                   schema: Schema | None = None) -> dict[str, Any]:
    """Quality, detection AUC and privacy of a table model (sampled `n` rows, default as many
    as `real`) or of a synthetic DataFrame, against the real (training) DataFrame."""
    import pandas as pd

    real = str_columns(real)
    if isinstance(model_or_synthetic, pd.DataFrame):
        synth = str_columns(model_or_synthetic)
        schema = schema or infer_schema(real)
    else:
        from .tabular import sample_table, table_schema

        schema = table_schema(model_or_synthetic)
        synth = sample_table(model_or_synthetic, n or len(real), seed=seed)
    real = text_gaps(real, tuple(schema.missing_tokens))  # the run's "?" cells are gaps, as in training
    require_columns(schema, real, "the evaluation table")
    small = min(len(real), len(synth))
    if small < MIN_SCORE_ROWS:
        raise DataError(f"scoring a table needs at least {MIN_SCORE_ROWS} real and {MIN_SCORE_ROWS} synthetic rows "
                        f"(the detection score is {MIN_SCORE_ROWS}-fold cross-validated); got {len(real)} real and "
                        f"{len(synth)} synthetic: pass a larger table, or a larger -n / --rows")
    real = real[schema.names]
    synth = synth[schema.names]
    result = {"rows_real": len(real), "rows_synthetic": len(synth)}
    result.update(quality(real, synth, schema, seed))
    result["detection_auc"] = detection_auc(real, synth, schema, seed)
    result.update(privacy(real, synth, schema))
    return result


SCORE_SAMPLE_ROWS = 100_000  # real rows scored from a table too large to read whole


def real_rows(path, n: int | None = None, seed: int = 0, sep: str | None = None, missing=(), decimal: str = "."):
    """The real rows to score against: the whole table, or its first `n` rows; for a file over
    the streaming threshold (table_stream.AUTO_STREAM_TABLE_BYTES), a seeded uniform sample of
    `n` (default SCORE_SAMPLE_ROWS) rows read in two chunked passes (count, then gather), so
    memory holds the sample, not the table. `missing`, `decimal`: the run's gap texts and decimal
    mark. Returns (DataFrame, rows in the file or None)."""
    import numpy as np
    import pandas as pd

    from .table_stream import read_chunks, should_stream_table
    from .table_io import read_table

    if not should_stream_table(path, None):
        real = read_table(path, sep, missing, decimal)
        return (real.iloc[:n] if n else real), None
    total = sum(len(chunk) for chunk in read_chunks(path, sep, missing=missing, decimal=decimal))
    take = min(n or SCORE_SAMPLE_ROWS, total)
    chosen = np.sort(np.random.default_rng([seed, 7]).choice(total, size=take, replace=False))  # (take,)
    parts, start = [], 0
    for chunk in read_chunks(path, sep, missing=missing, decimal=decimal):
        lo, hi = np.searchsorted(chosen, [start, start + len(chunk)])
        if hi > lo:
            parts.append(chunk.iloc[chosen[lo:hi] - start])
        start += len(chunk)
    return pd.concat(parts, ignore_index=True), total


MAX_PAIR_COLUMNS = 40  # columns per SDMetrics report: its pair trends cost grows with their square


def quality(real, synth, schema: Schema, seed: int = 0) -> dict[str, float]:
    """SDMetrics' single-table QualityReport: overall, column shapes, column-pair trends. A table of
    more than MAX_PAIR_COLUMNS columns is scored in seeded random groups of at most that many
    (a 500 x 320 table took over 5 minutes, as one report, for its 51,040 pairs): every column's
    shape, and the pairs within a group, a random share of all pairs (`column_pairs_scored`)."""
    import warnings

    with warnings.catch_warnings():  # sdmetrics 0.32 marks the single-table import path deprecated
        warnings.simplefilter("ignore", FutureWarning)
        from sdmetrics.reports.single_table import QualityReport

    import pandas as pd

    dates = [c.name for c in schema.columns if c.kind == "datetime"]
    if dates:  # a CSV holds dates as text: give sdmetrics real timestamps on both sides
        real, synth = real.copy(), synth.copy()
        for name in dates:
            real[name], synth[name] = (pd.to_datetime(t[name], utc=True).dt.tz_convert(None) for t in (real, synth))
    columns = list(schema.columns)
    k = math.ceil(len(columns) / MAX_PAIR_COLUMNS)
    if k > 1:
        columns = [columns[i] for i in np.random.default_rng([seed, 11]).permutation(len(columns))]
    shapes, pairs = [], []
    for group in (columns[i::k] for i in range(k)):
        names = [c.name for c in group]
        meta = {"columns": {c.name: {"sdtype": SDTYPES[c.kind]} for c in group}}
        report = QualityReport()
        with warnings.catch_warnings():  # sdmetrics' groupby on categorical columns warns of a pandas default
            warnings.simplefilter("ignore", FutureWarning)
            report.generate(real[names], synth[names], meta, verbose=False)
        shapes.append(report.get_details("Column Shapes")["Score"])
        trends = report.get_details("Column Pair Trends")
        if len(trends):  # only the pairs SDMetrics scores: correlated or associated in the real table
            pairs.append(trends.loc[trends["Meets Threshold?"].astype("boolean").fillna(False), "Score"])
    shape = float(pd.concat(shapes).mean())
    trend = float(pd.concat(pairs).mean()) if pairs else float("nan")
    n = len(columns)
    return {"quality": float(np.nanmean([shape, trend])), "column_shapes": shape, "column_pair_trends": trend,
            "column_pairs_scored": sum(len(g) * (len(g) - 1) for g in (columns[i::k] for i in range(k))) /
            max(1, n * (n - 1))}


def features(df, schema: Schema, ref) -> np.ndarray:
    """Rows -> numbers for classifiers and distances: numeric columns standardised by the
    real table `ref` (missing: 0 plus an indicator), categoricals one-hot over `ref`'s labels."""
    import pandas as pd

    cols = []
    for c in schema.columns:
        if c.kind == "constant":
            continue
        if c.numeric:
            x, r = to_numbers(c, df[c.name]), to_numbers(c, ref[c.name])
            # divided by the largest magnitude first: the variance of values near 1e300 overflows float64
            big = float(np.nanmax(np.abs(r))) if not np.isnan(r).all() else 0.0
            x, r = (x / big, r / big) if big > 0 else (x, r)
            sd = np.nanstd(r) or 1.0
            z = (x - np.nanmean(r)) / sd
            cols += [np.nan_to_num(z)[:, None], np.isnan(x)[:, None].astype(float)]
        else:
            labels = pd.Series(ref[c.name].astype(str).unique())
            cols.append((df[c.name].astype(str).to_numpy()[:, None] == labels.to_numpy()[None, :]).astype(float))
    return np.concatenate(cols, axis=1)


def detection_auc(real, synth, schema: Schema, seed: int = 0) -> float:
    """Mean 5-fold cross-validated ROC AUC of gradient-boosted trees, real (0) vs synthetic (1)."""
    from sklearn.ensemble import HistGradientBoostingClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    x = np.concatenate([features(real, schema, real), features(synth, schema, real)])
    y = np.r_[np.zeros(len(real)), np.ones(len(synth))]
    clf = HistGradientBoostingClassifier(max_iter=100, random_state=seed)
    folds = StratifiedKFold(5, shuffle=True, random_state=seed)
    return float(np.mean(cross_val_score(clf, x, y, cv=folds, scoring="roc_auc")))


def privacy(real, synth, schema: Schema) -> dict[str, float]:
    """Distance to the closest training row (Euclidean on `features`), against the median
    nearest-neighbour distance among training rows."""
    from sklearn.neighbors import NearestNeighbors

    xr, xs = features(real, schema, real), features(synth, schema, real)
    nn = NearestNeighbors(n_neighbors=2).fit(xr)
    d_real = nn.kneighbors(xr)[0][:, 1]  # (N,) to the nearest other training row
    d_syn = nn.kneighbors(xs, n_neighbors=1)[0][:, 0]  # (M,)
    median = float(np.median(d_real))
    synth_keys = synth.astype(str).agg("\x1f".join, axis=1)
    copies = synth_keys.isin(set(real.astype(str).agg("\x1f".join, axis=1)))
    return {"privacy_closer_than_median": float(np.mean(d_syn < median)), "median_nn_distance": median,
            "exact_copies": int(copies.sum()), "exact_copy_share": float(copies.mean())}
