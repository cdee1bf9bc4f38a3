"""Real vs synthetic tables for the report: per-column marginals, the two association
matrices side by side, and the evaluation scores (pandas in, an HTML section out)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import plots
from .errors import ConfigError
from .htmlpage import _flatten, _img, _section, _table


def _table_report(model, data: Any, n: int, seed: int, sep: str | None = None) -> str:
    """Real vs synthetic for a table model: `data` (a .csv/.parquet path, read with `sep` or the
    sniffed separator, or a DataFrame; the first `n` rows) against as many sampled rows, with
    the evaluation scores."""
    import pandas as pd

    from .table_io import read_table, text_gaps
    from .table_metrics import evaluate_table
    from .tables import require_columns, str_columns
    from .tabular import sample_table

    if data is None:
        raise ConfigError("a table run's report compares real and synthetic rows: give the real table, "
                          "e.g. vaekit report RUN data.csv -o report.html")
    if isinstance(data, pd.DataFrame):
        real = data
    elif isinstance(data, (str, os.PathLike)):
        real = read_table(data, sep or model.schema.sep, missing=model.schema.missing_tokens,  # the run's --sep
                          decimal=model.schema.decimal)
    else:
        raise ConfigError("a table model's report needs the real table: a .csv/.parquet path or a DataFrame")
    real = text_gaps(str_columns(real), tuple(model.schema.missing_tokens))
    require_columns(model.schema, real, "the real table")
    real = real.iloc[:n]
    synth = sample_table(model, len(real), seed=seed)
    scores = evaluate_table(synth, real[model.schema.names], schema=model.schema, seed=seed)
    return table_section(real[model.schema.names], synth, scores)


def table_section(real, synthetic, scores: dict[str, Any] | None = None, title: str = "Tables: real vs synthetic",
                  max_columns: int = 40) -> str:
    """An HTML section comparing two pandas DataFrames with the same columns: the marginal
    distribution of each column (histograms for numbers, category shares otherwise), the two
    association matrices side by side, and the `scores` dict as a table."""
    missing = [c for c in real.columns if c not in synthetic.columns]
    if missing:
        raise ConfigError(f"synthetic table lacks column(s) {missing[:5]}; generate the same columns as the real table")
    cols = list(real.columns[:max_columns])
    numeric = {c: _is_numeric(real[c]) for c in cols}
    parts = [_img(plots.marginal(real[c], synthetic[c], str(c), numeric[c]), f"column {c}") for c in cols]
    body = f"<h3>Marginals</h3><div class=cols>{''.join(parts)}</div>"
    if len(cols) > 1:
        a, b = associations(real[cols]), associations(synthetic[cols])
        gap = float(np.nanmean(np.abs(a - b)[~np.eye(len(cols), dtype=bool)]))
        body += ("<h3>Associations</h3>" + _img(plots.matrices([str(c) for c in cols], a, b, ("real", "synthetic")),
                                                "association matrices")
                 + f"<p class=note>Pearson r between numbers, Cramér's V between categories, the correlation ratio "
                 f"between a number and a category. Mean absolute difference off the diagonal: {gap:.3f}.</p>")
    if scores:
        body += "<h3>Scores</h3>" + _table(_flatten(scores))
    note = f"<p class=note>{len(real)} real and {len(synthetic)} synthetic rows"
    shown = len(real.columns) > max_columns
    note += f"; the first {max_columns} of {len(real.columns)} columns shown.</p>" if shown else ".</p>"
    return _section(title, note + body)


def associations(df) -> np.ndarray:
    """(C, C) associations between the columns of a DataFrame: Pearson r (number-number),
    Cramér's V (category-category), the correlation ratio eta (number-category). NaN rows
    are dropped per pair; a constant column gives 0."""
    cols = list(df.columns)
    num = {c: _is_numeric(df[c]) for c in cols}
    out = np.eye(len(cols))
    for i, a in enumerate(cols):
        for j in range(i + 1, len(cols)):
            b = cols[j]
            pair = df[[a, b]].dropna()
            x, y = pair.iloc[:, 0], pair.iloc[:, 1]
            if num[a] and num[b]:
                v = np.corrcoef(x.to_numpy(float), y.to_numpy(float))[0, 1] if x.std() > 0 and y.std() > 0 else 0.0
            elif not num[a] and not num[b]:
                v = _cramers_v(x, y)
            else:
                v = _eta(x if num[a] else y, y if num[a] else x)
            out[i, j] = out[j, i] = 0.0 if not np.isfinite(v) else v
    return out


def _cramers_v(x, y) -> float:
    import pandas as pd

    table = pd.crosstab(x.astype(str), y.astype(str)).to_numpy(float)  # (r, c) counts
    if min(table.shape) < 2:
        return 0.0
    expected = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    chi2 = float(((table - expected) ** 2 / expected).sum())
    return float(np.sqrt(chi2 / table.sum() / (min(table.shape) - 1)))


def _eta(values, groups) -> float:
    v = values.to_numpy(float)
    total = ((v - v.mean()) ** 2).sum()
    if total == 0:
        return 0.0
    between = sum(len(g) * (g.mean() - v.mean()) ** 2 for _, g in values.groupby(groups.astype(str).to_numpy()))
    return float(np.sqrt(between / total))


def _is_numeric(s) -> bool:
    from pandas.api.types import is_bool_dtype, is_numeric_dtype

    return is_numeric_dtype(s) and not is_bool_dtype(s)
