"""Encoding table rows to the model's numbers and back (the schema is in tables.py).

    numeric      Gaussianised through the column's quantiles, or mode-specific normalisation
                 (x - mu_k) / (4 sd_k) with a one-hot mode k (Xu et al. 2019); then a 0/1
                 missingness indicator if the column had gaps
    categorical  one-hot over the seen labels (+ a last "missing" slot if it had gaps)
Decoding inverts it: numbers clipped to the seen range, integers rounded, labels, booleans,
datetimes and the original dtypes restored.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch  # torch.special's normal CDF and quantile: no scipy import (about 0.3 s) on the way

from .errors import DataError
from .tables import U_CLIP, Column, Schema, plain, to_numbers


def _gaussianise(col: Column, x: np.ndarray) -> np.ndarray:
    """Quantile transform to N(0, 1): the level of x on the quantile grid (ties map to the
    middle of their run, as sklearn's QuantileTransformer), then the normal quantile."""
    q = np.asarray(col.quantiles)
    levels = np.linspace(0, 1, len(q))
    if len(q) == 1:
        return np.zeros_like(x)
    u = 0.5 * (np.interp(x, q, levels) - np.interp(-x, -q[::-1], -levels[::-1]))
    return torch.special.ndtri(torch.from_numpy(np.clip(u, U_CLIP, 1 - U_CLIP))).numpy()  # float64


def _degaussianise(col: Column, v: np.ndarray) -> np.ndarray:
    q = np.asarray(col.quantiles)
    u = torch.special.ndtr(torch.from_numpy(np.asarray(v, dtype=np.float64))).numpy()  # (N,) in [0, 1]
    return np.interp(u, np.linspace(0, 1, len(q)), q)


def encode(schema: Schema, df, columns: list[Column] | None = None) -> np.ndarray:
    """Rows of df -> encoded float32 matrix (N, D_enc) for `columns` (default: the modelled ones)."""
    blocks = []
    for col in schema.modelled if columns is None else columns:
        if col.kind == "constant":
            continue
        s = df[col.name]
        miss = s.isna().to_numpy()
        if col.numeric:
            if miss.any() and col.missing_rate == 0:
                raise DataError(f"column {col.name!r} has missing values but had none in training; fill them")
            x = to_numbers(col, s)
            x = np.where(miss, np.nan_to_num(np.median(col.quantiles)), x)
            if col.means:
                mu, sd, w = map(np.asarray, (col.means, col.stds, col.weights))
                logp = np.log(w) - np.log(sd) - 0.5 * ((x[:, None] - mu) / sd) ** 2  # (N, K)
                k = logp.argmax(1)
                blocks += [np.clip((x - mu[k]) / (4 * sd[k]), -0.99, 0.99)[:, None], np.eye(len(mu))[k]]
            else:
                blocks.append(_gaussianise(col, x)[:, None])
            if col.missing_rate > 0:
                blocks.append(miss[:, None].astype(np.float64))
            continue
        index = {label_key(c): i for i, c in enumerate(col.categories)}
        code_of = {}  # each distinct value once: a column has few labels and many rows
        for v in s[~miss].unique():
            if label_key(v) not in index:
                raise DataError(f"column {col.name!r} has the value {v!r}, not seen in training; "
                                f"seen: {', '.join(map(str, col.categories))}")
            code_of[v] = index[label_key(v)]
        codes = np.full(len(s), len(col.categories), dtype=np.int64)  # missing -> the last slot
        codes[~miss] = s[~miss].map(code_of).to_numpy(dtype=np.int64)
        if miss.any() and col.missing_rate == 0:
            raise DataError(f"column {col.name!r} has missing values but had none in training; fill them")
        blocks.append(np.eye(col.width())[codes])
    if not blocks:
        return np.zeros((len(df), 0), dtype=np.float32)
    return np.concatenate(blocks, axis=1).astype(np.float32)


def label_key(v: Any) -> str:
    """Labels compare as text, so 2008 (int) and "2008" (from a condition string) match."""
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        v = int(v)
    return str(plain(v))


def decode(schema: Schema, x: np.ndarray, columns: list[Column] | None = None) -> dict[str, Any]:
    """Encoded (N, D_enc) -> {column: pandas Series} in the original dtypes. Numeric values
    are clipped to the seen range and rounded for integers; one-hot blocks become labels
    (argmax); missingness indicators > 0.5 become missing."""
    import pandas as pd

    out, start = {}, 0
    n = len(x)
    for col in schema.modelled if columns is None else columns:
        w = col.width()
        block = x[:, start:start + w]
        start += w
        if col.kind == "constant":
            out[col.name] = pd.Series([col.value] * n, dtype=col.dtype if col.dtype != "object" else object)
            continue
        miss = block[:, -1] > 0.5 if col.missing_rate > 0 else np.zeros(n, bool)
        if col.numeric:
            if col.means:
                mu, sd = np.asarray(col.means), np.asarray(col.stds)
                k = block[:, 1:1 + len(mu)].argmax(1)
                v = np.clip(block[:, 0], -1, 1) * 4 * sd[k] + mu[k]
            else:
                v = _degaussianise(col, block[:, 0].astype(np.float64))
            v = np.clip(v, col.min, col.max)
            if col.kind == "datetime" and col.step:  # dates stay dates (min and max are multiples too)
                v = np.round(v / col.step) * col.step
            elif col.kind != "continuous":
                v = np.round(v)
            elif col.decimals is not None:  # the training file's precision (min and max have it too)
                v = np.round(v, col.decimals)
            out[col.name] = numeric_series(col, v, miss)
            continue
        codes = block.argmax(1)
        labels = [None if c >= len(col.categories) else col.categories[c] for c in codes]
        out[col.name] = label_series(col, labels)
    return out


def numeric_series(col: Column, v: np.ndarray, miss: np.ndarray):
    import pandas as pd

    if col.kind == "datetime":
        t = pd.Series(pd.to_datetime(np.where(miss, np.nan, v) * 1e9, unit="ns"))  # naive, in UTC
        if not col.dtype.startswith("datetime64"):
            return t
        tz = getattr(pd.api.types.pandas_dtype(col.dtype), "tz", None)  # e.g. datetime64[ns, Europe/Paris]
        return t.dt.tz_localize("UTC").dt.tz_convert(tz) if tz is not None else t.astype(col.dtype)
    v = np.where(miss, np.nan, v)
    if col.dtype.startswith("timedelta64"):
        return pd.Series(pd.to_timedelta(v, unit="s")).astype(col.dtype)
    if miss.any() and col.dtype.startswith("int"):
        return pd.Series(v).astype("Int64")  # an int64 column with gaps needs pandas' nullable int
    return pd.Series(v).astype(col.dtype)


def label_series(col: Column, labels: list[Any]):
    import pandas as pd

    if col.levels is not None:  # None: NaN in the category dtype
        return pd.Series(pd.Categorical(labels, categories=col.levels, ordered=col.ordered))
    s = pd.Series(labels, dtype=object)
    if any(v is None for v in labels):
        return s if col.dtype in ("object", "bool") else s.astype(col.dtype)
    try:
        return s.astype(col.dtype)
    except (TypeError, ValueError):
        return s


def assemble(schema: Schema, parts: dict[str, Any]):
    """A DataFrame with the schema's columns in order."""
    import pandas as pd

    return pd.DataFrame({c.name: parts[c.name].reset_index(drop=True) for c in schema.columns})
