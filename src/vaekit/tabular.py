"""Synthetic tables: fit a VAE on a DataFrame / CSV / Parquet and sample new rows.

    model = fit_table("data.csv", out="run")                       # schema inferred, saved
    df = sample_table(model, 1000)                                  # original columns and dtypes
    model = fit_table(df, condition_columns=["sex", "age"])         # a conditional VAE
    df = sample_table(model, 500, conditions=["sex=Female", "age>40"])

The modelled columns are encoded to x (tables.encode) and scored by a MixedLikelihood; the
condition columns, encoded the same way, are the condition vector c of a conditional VAE
(Sohn et al. 2015), so conditional rows are generated directly, never by rejection. A
sample's condition values are drawn from the training rows that satisfy the predicates
(the run keeps those columns' training values in schema.json for that).
"""

from __future__ import annotations

import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import Config
from .errors import ConfigError, DataError
from .likelihoods import MixedLikelihood
from .model import VAE
from .table_codec import assemble, decode, encode, label_key, label_series, numeric_series
from .table_io import check_decimal, check_missing, gap_words, read_table, text_gaps
from .tables import Schema, check_trainable, infer_schema, require_columns, str_columns

CONDITION = re.compile(r"^\s*(.+?)\s*(==|!=|>=|<=|=|>|<)\s*(.*?)\s*$")


def table_config(**changes: Any) -> Config:
    """Defaults for tables: a smaller net than for images, mixed likelihood. Batch 500 at
    lr 4e-3 scored higher and fitted faster than batch 256 at 2e-3 on both benchmark tables
    (docs/benchmarks.md (Synthetic tables))."""
    base = dict(latent_dim=16, hidden=[128, 128], epochs=100, batch_size=500, lr=4e-3, patience=20)
    return Config(**{**base, **changes, "likelihood": "mixed"})


def fit_table(data: Any, config: Config | None = None, out: str | os.PathLike | None = None, *,
              kinds: dict[str, str] | None = None, condition_columns: list[str] | str | None = None,
              encoding: str = "quantile", sep: str | None = None, force: bool = False, resume: bool = False,
              stream: bool | None = None, chunk_rows: int | None = None, missing: list[str] | None = None,
              decimal: str = ".") -> VAE:
    """Fit a VAE to a table (a pandas DataFrame or a .csv/.parquet path) and return it with
    its `schema`; with `out`, save the run folder (schema.json included, sha256-checked).
    `kinds` overrides inferred column kinds, e.g. {"year": "categorical"}; `condition_columns` is a list
    of names or one comma-separated string (a name that holds commas is matched whole); `resume` continues
    an interrupted fit from the checkpoints in `<out>.partial` (see train.fit). `missing`: cell
    texts that mean a gap, e.g. ["?"] (blank cells always do); the run keeps them, reads later
    files (evaluate, report, reconstruct) the same way and writes its gaps back as the first.
    `decimal`: a CSV's decimal mark ("," for 0,75), kept and written back the same way.
    A path is read in chunks of `chunk_rows` rows (default: about 4 MB of text), never whole,
    with `stream=True`, or with the default None when the file is larger than 256 MiB
    (table_stream.AUTO_STREAM_TABLE_BYTES): the rows are encoded to a temporary .npy beside
    `out` and trained on batch by batch."""
    from .checkpoint import check_output_dir
    from .table_stream import encoded_table, should_stream_table

    if config is not None and config.arch in ("conv", "hvae"):  # VAE.from_config would raise a bare ValueError
        preset = " (which --preset mnist picks)" if config.arch == "hvae" else ""
        raise ConfigError(f"--arch {config.arch}{preset} needs images (N, C, H, W); a table's rows are vectors: "
                          "use --arch mlp (the default for tables) or ladder")
    if out is not None and not resume:
        check_output_dir(Path(out), force)  # before any work
    config = (config or table_config()).replace(likelihood="mixed")
    missing, decimal = check_missing(missing), check_decimal(decimal)
    if isinstance(data, (str, os.PathLike)) and should_stream_table(data, stream):
        with encoded_table(data, kinds, encoding, condition_columns, config.seed, sep, chunk_rows, near=out,
                           missing=missing, decimal=decimal) as parts:
            parts[0].missing_tokens = parts[0].missing_tokens or gap_words(data, sep)  # 'NA' written back as NA
            parts[0].sep = sep
            return _fit_encoded(*parts, config, out, force, resume)
    df = read_table(data, sep, missing, decimal) if isinstance(data, (str, os.PathLike)) else data
    if type(df).__name__ != "DataFrame":
        raise DataError(f"fit_table needs a pandas DataFrame or a .csv/.parquet path, not {type(df).__name__}; "
                        "wrap an array as pandas.DataFrame(a, columns=[...]), or use vaekit.fit for arrays")
    df = text_gaps(str_columns(df), missing)  # a DataFrame's own "?" cells too
    schema = infer_schema(df, kinds, encoding, condition_columns, seed=config.seed)
    path = isinstance(data, (str, os.PathLike))
    schema.missing_tokens, schema.decimal = list(missing) or (gap_words(data, sep) if path else []), decimal
    schema.sep = sep if path else None
    check_trainable(schema, len(df))
    x = torch.from_numpy(encode(schema, df))  # (N, D_enc)
    c = torch.from_numpy(encode(schema, df, schema.conditions)) if schema.condition_columns else None  # (N, C)
    return _fit_encoded(schema, x, c, config, out, force, resume)


def _fit_encoded(schema: Schema, x, c, config: Config, out, force: bool, resume: bool) -> VAE:
    """Train on encoded rows x (N, D_enc) with conditions c (N, C) or None: tensors, or
    stream.LazyRows read batch by batch."""
    from .data import Dataset
    from .train import fit

    config = config.replace(input_shape=[x.shape[1]])
    if c is not None:
        config = config.replace(condition_dim=c.shape[1], condition_on="columns")
    torch.manual_seed(config.seed)  # the initial weights: same seed, same model (fit() seeds the rest)
    model = VAE.from_config(config, likelihood=MixedLikelihood(schema.heads()))
    model.schema = schema  # saved as schema.json beside the weights
    data = x if isinstance(x, torch.Tensor) else Dataset(x, None, False, x.name)
    kwargs = {} if c is None else {"condition": c}
    return fit(data, config, out, force=force, model=model, resume=resume, **kwargs)


def table_schema(model) -> Schema:
    schema = getattr(model, "schema", None)
    if schema is None:
        raise ConfigError("this run is not a table model; train it on a .csv or .parquet file")
    return schema


@torch.no_grad()
def sample_table(model, n: int, conditions: list[str] | dict[str, Any] | None = None, seed: int = 0,
                 temperature: float = 1.0):
    """n new rows as a pandas DataFrame with the training table's columns and dtypes.

    `conditions` (conditional models): strings like "sex=Female", "age>40", "age<=60",
    "island!=Dream", or a dict {column: value} of equalities. Every condition column's
    values are drawn from training rows satisfying all of them; the rest is generated."""
    schema = table_schema(model)
    if n < 1:
        raise ConfigError(f"n={n} must be >= 1")
    gen = torch.Generator().manual_seed(seed)
    preds = parse_conditions(schema, conditions)
    cond_parts, c = {}, None
    if schema.condition_columns:
        cond_parts, cond_df = draw_conditions(schema, preds, n, gen)
        c = torch.from_numpy(encode(schema, cond_df, schema.conditions)).to(model.device)  # (n, C)
    kwargs = {} if c is None else {"condition": c}
    x = model.sample(n, temperature=temperature, mean=False, generator=gen, **kwargs)  # (n, D_enc)
    parts = decode(schema, x.cpu().numpy())
    parts.update(cond_parts)
    return assemble(schema, parts)


@torch.no_grad()
def reconstruct_table(model, df):
    """Each row of df encoded to its posterior mean and decoded: the table's rows as the model
    sees them (numbers from the likelihood's mean, the most probable label, missing where the
    indicator's probability passes 0.5). A conditional model's condition columns are the
    rows' own, kept as they are. Returns a DataFrame with the training table's columns."""
    schema = table_schema(model)
    df = text_gaps(str_columns(df), tuple(schema.missing_tokens))
    require_columns(schema, df, "the table")
    x = torch.from_numpy(encode(schema, df)).to(model.device)  # (N, D_enc)
    c = None
    if schema.condition_columns:
        c = torch.from_numpy(encode(schema, df, schema.conditions)).to(model.device)  # (N, C)
    recon = model.reconstruct(x, c=c)  # (N, D_enc) likelihood means
    parts = decode(schema, recon.cpu().numpy())
    parts.update({col.name: df[col.name] for col in schema.conditions})
    return assemble(schema, parts)


def parse_conditions(schema: Schema, conditions) -> list[tuple[str, str, Any]]:
    """Conditions -> [(column, op, value)], checked against the schema."""
    if not conditions:
        return []
    items = [(k, "=", v) for k, v in conditions.items()] if isinstance(conditions, dict) else []
    for text in ([] if isinstance(conditions, dict) else list(conditions)):
        m = CONDITION.match(str(text))
        if not m or not m.group(1):
            raise ConfigError(f"condition {text!r} must look like COLUMN=VALUE or COLUMN>NUMBER, e.g. sex=Female")
        items.append((m.group(1), "=" if m.group(2) == "==" else m.group(2), m.group(3)))
    out = []
    for name, op, value in items:
        if name not in schema.names:
            raise ConfigError(f"condition on column {name!r}, which the table lacks; columns: {', '.join(schema.names)}")
        if name not in schema.condition_columns:
            have = ", ".join(schema.condition_columns) or "none"
            raise ConfigError(f"column {name!r} was not a condition column in training (condition columns: {have}); "
                              f"train with --condition-columns {name}")
        col = schema.column(name)
        if value is None or (isinstance(value, str) and value == ""):  # `col=`: the missing state, as a CSV writes it
            if op not in ("=", "!="):
                raise ConfigError(f"condition {name}{op} needs a value; {name}= asks for rows where {name!r} is "
                                  f"missing, {name}!= for rows where it is not")
            if not any(v is None for v in schema.condition_rows[name]):
                raise DataError(f"column {name!r} was never missing in training, so {name}{op} cannot be asked for; "
                                f"give a value")
            out.append((name, op, None))
            continue
        if col.numeric:
            value = _number(col, value, schema.decimal)
            if col.kind == "integer" and op == "=" and value != round(value):
                raise ConfigError(f"condition {name}={value:g}: column {name!r} holds whole numbers; give a whole "
                                  f"number, or a range such as {name}>{math.floor(value)}")
        elif op not in ("=", "!="):
            raise ConfigError(f"condition {name}{op}{value}: {name!r} is {col.kind}; use {name}=VALUE or {name}!=VALUE")
        else:
            value = _category(col, value)
        out.append((name, op, value))
    return out


def _category(col, value) -> Any:
    """The training category a condition value names: as written, else ignoring case where that is
    unambiguous (flag=true for a column of True/False, sex=female for Female); 1/0 name True/False."""
    keys = {label_key(v): v for v in col.categories}
    if label_key(value) in keys:
        return value
    text = str(value).strip().lower()
    hits = [v for k, v in keys.items() if k.lower() == text]
    if not hits and all(isinstance(v, (bool, np.bool_)) for v in col.categories):
        hits = [v for v in col.categories if text == ("1" if v else "0")]
    if len(hits) == 1:
        return hits[0]
    raise DataError(f"column {col.name!r} never had the value {value!r} in training; "
                    f"seen: {', '.join(map(str, col.categories))}")


def _number(col, value, decimal: str = ".") -> float:
    """A condition's number (or date, in seconds); a run read with --decimal , takes `age>40,5`
    as its CSVs write it, and `age>40.5` too."""
    import pandas as pd

    what = "date" if col.kind == "datetime" else "number"
    try:
        if col.kind == "datetime":
            stamp = pd.Timestamp(value)
            number = math.nan if pd.isna(stamp) else stamp.value / 1e9
        else:
            number = float(value.replace(decimal, ".") if isinstance(value, str) and decimal != "." else value)
    except (ValueError, TypeError):
        raise ConfigError(f"condition on {col.name!r} needs a {what}, got {value!r}") from None
    if not math.isfinite(number):  # inf, nan, NaT: no value or range to draw from (`col=` asks for the missing)
        raise ConfigError(f"condition on {col.name!r} needs a finite {what}, got {value!r}; for rows where "
                          f"{col.name!r} is missing write {col.name}=")
    return number


def _shown(col, value) -> str:
    """A condition's value as a user writes it: a date for a datetime column (held in seconds)."""
    import pandas as pd

    if col.kind == "datetime" and isinstance(value, (int, float)):
        return str(pd.Timestamp(value, unit="s"))
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def draw_conditions(schema: Schema, preds: list[tuple[str, str, Any]], n: int, gen: torch.Generator):
    """Draw n condition rows from the training rows that satisfy every predicate. Equality on
    a numeric column sets that value (within the seen range) instead of filtering rows."""
    import pandas as pd

    rows = schema.condition_rows
    count = len(next(iter(rows.values())))
    mask = np.ones(count, dtype=bool)
    fixed = {}
    for name, op, value in preds:
        col = schema.column(name)
        vals = rows[name]
        if value is None:  # the missing state (or, with !=, any value)
            mask &= np.array([(x is None) == (op == "=") for x in vals])
            continue
        if col.numeric and op == "=":
            if not (col.min <= value <= col.max):
                raise DataError(f"condition {name}={_shown(col, value)} is outside the training range "
                                f"{_shown(col, col.min)}..{_shown(col, col.max)} of column {name!r}; pick a value in "
                                "that range")
            fixed[name] = value
            continue
        if col.numeric:
            v = np.array([np.nan if x is None else x for x in vals], dtype=np.float64)
            with np.errstate(invalid="ignore"):
                hit = {">": v > value, ">=": v >= value, "<": v < value, "<=": v <= value, "!=": v != value}[op]
        else:
            keys = [None if x is None else label_key(x) for x in vals]
            hit = np.array([(k == label_key(value)) == (op == "=") for k in keys])
        mask &= hit
    idx = np.flatnonzero(mask)
    if len(idx) == 0:
        text = " and ".join(f"{a}{o}{'' if b is None else _shown(schema.column(a), b)}" for a, o, b in preds)
        raise DataError(f"no training row satisfies {text}; loosen the conditions")
    pick = idx[torch.randint(len(idx), (n,), generator=gen).numpy()]  # (n,)
    parts, frame = {}, {}
    for col in schema.conditions:
        values = [rows[col.name][i] for i in pick]
        if col.name in fixed:
            values = [fixed[col.name]] * n
        if col.numeric:
            v = np.array([np.nan if x is None else x for x in values], dtype=np.float64)
            parts[col.name] = numeric_series(col, np.nan_to_num(v), np.isnan(v))
            frame[col.name] = pd.Series(v)  # numbers (datetimes as seconds) for encoding
        else:
            parts[col.name] = label_series(col, values)
            frame[col.name] = pd.Series(values, dtype=object)
    return parts, pd.DataFrame(frame)
