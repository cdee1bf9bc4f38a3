"""Tables: infer a column schema from a DataFrame (a column's kind is guessed by table_kinds.py,
files are read and written by table_io.py, rows encoded by table_codec.py).

Each column gets a kind and an encoding into a block of the row vector x (D_enc,):
    continuous / integer / datetime  one value, Gaussianised by the column's quantiles
                                     (default) or mode-specific normalisation with a
                                     per-column Gaussian mixture (Xu et al., CTGAN/TVAE 2019):
                                     a value (x - mu_k) / (4 sd_k) and a one-hot mode k;
                                     plus a 0/1 missingness indicator if the column has gaps
    categorical / boolean            one-hot over the seen labels (+ a "missing" label)
    constant                         nothing: one value and no gaps is written back as is
The schema is plain JSON (numbers, strings, lists): sklearn objects are reduced to their
fitted numbers, so a saved run never needs pickle. `heads()` lists the blocks for the
mixed likelihood (likelihoods.MixedLikelihood).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConfigError, DataError, IncompatibleError
from .table_kinds import ZONE, _guess_kind, decimals, label_error, nested_error, time_step

KINDS = ("continuous", "integer", "boolean", "categorical", "datetime", "constant")
ZONED = rf".*:\d{{2}}(\.\d+)?{ZONE}"  # an ISO datetime with an offset: kept time-zone aware (UTC)
ZONED_DTYPE = "datetime64[ns, UTC]"
N_QUANTILES = 1000  # quantile grid per numeric column (fewer with fewer rows)
U_CLIP = 1e-4  # uniform levels clipped to [U_CLIP, 1 - U_CLIP]: Gaussianised values within +-3.7


@dataclass
class Column:
    name: str  # the column's header
    kind: str  # one of KINDS
    dtype: str  # the pandas dtype it had, restored when decoding
    missing_rate: float = 0.0  # share of missing cells in the training data
    categories: list[Any] = field(default_factory=list)  # categorical/boolean: seen labels, JSON values
    quantiles: list[float] = field(default_factory=list)  # numeric: values at evenly spaced levels
    means: list[float] = field(default_factory=list)  # numeric, gmm encoding: mode means
    stds: list[float] = field(default_factory=list)  # numeric, gmm encoding: mode standard deviations
    weights: list[float] = field(default_factory=list)  # numeric, gmm encoding: mode weights
    min: float | None = None  # numeric: smallest seen value (decoded values are clipped to it)
    max: float | None = None  # numeric: largest seen value
    value: Any = None  # constant: the one value
    step: float | None = None  # datetime: seconds every seen value is a whole multiple of (86400: dates only)
    decimals: int | None = None  # continuous: decimal places every seen value fits in (None: more than MAX_DECIMALS)
    levels: list[Any] | None = None  # a pandas category dtype's categories, in its order, unused ones too
    ordered: bool = False  # and whether that order ranks them (pd.Categorical(..., ordered=True))

    @property
    def numeric(self) -> bool:
        return self.kind in ("continuous", "integer", "datetime")

    def width(self) -> int:
        """Encoded size of this column."""
        if self.kind == "constant":
            return 0
        if not self.numeric:
            return len(self.categories) + (self.missing_rate > 0)
        return 1 + (len(self.means) if self.means else 0) + (self.missing_rate > 0)


@dataclass
class Schema:
    columns: list[Column]  # every column of the table, in order
    encoding: str = "quantile"  # numeric columns: "quantile" or "gmm"
    condition_columns: list[str] = field(default_factory=list)  # columns fed to the model as c
    condition_rows: dict[str, list[Any]] = field(default_factory=dict)  # their training values
    missing_tokens: list[str] = field(default_factory=list)  # cell texts read as gaps (--missing); written back as the first
    decimal: str = "."  # the CSV's decimal mark (--decimal ,): read, and written back, that way
    sep: str | None = None  # the separator given at training (--sep '|'): the run's tables are read with it again

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise ConfigError(f"no column {name!r} in this table; columns: {', '.join(self.names)}")

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def modelled(self) -> list[Column]:
        """Columns encoded into x (not conditions)."""
        return [c for c in self.columns if c.name not in self.condition_columns]

    @property
    def conditions(self) -> list[Column]:
        return [self.column(n) for n in self.condition_columns]

    def heads(self, columns: list[Column] | None = None) -> list[list[Any]]:
        """Blocks of the encoded row: [kind, start, width, mask], kind normal | categorical |
        bernoulli; `mask` is the index of the missingness indicator that switches a normal
        value off (-1: none)."""
        out, start = [], 0
        for c in self.modelled if columns is None else columns:
            if c.kind == "constant":
                continue
            miss = start + c.width() - 1 if c.missing_rate > 0 else -1
            if c.numeric:
                out.append(["normal", start, 1, miss])
                if c.means:
                    out.append(["categorical", start + 1, len(c.means), -1])
                if miss >= 0:
                    out.append(["bernoulli", miss, 1, -1])
            else:
                out.append(["categorical", start, c.width(), -1])
            start += c.width()
        return out

    def to_json(self) -> str:
        """One line per column (and per condition column's values): diffable, and short
        enough to read even with a thousand quantiles per column."""
        d = dataclasses.asdict(self)
        lines = [f" {json.dumps(k)}: {json.dumps(d[k], default=_json_value)}"
                 for k in ("encoding", "condition_columns", "missing_tokens", "decimal", "sep")]
        cols = ",\n  ".join(json.dumps(c, default=_json_value) for c in d["columns"])
        rows = ",\n  ".join(f"{json.dumps(k)}: {json.dumps(v, default=_json_value)}" for k, v in d["condition_rows"].items())
        lines += [f' "columns": [\n  {cols}\n ]', f' "condition_rows": {{\n  {rows}\n }}' if rows else ' "condition_rows": {}']
        return "{\n" + ",\n".join(lines) + "\n}\n"

    @classmethod
    def from_json(cls, text: str) -> "Schema":
        d = json.loads(text)
        d["columns"] = [Column(**c) for c in d["columns"]]
        return cls(**d)


def str_columns(df):
    """df with its column names as text (a schema's names are text; pandas.DataFrame(array) has
    0, 1, ...): the frame itself when they are text already."""
    if all(isinstance(name, str) for name in df.columns):
        return df
    renamed = df.rename(columns=str)
    if len(set(renamed.columns)) != len(renamed.columns):
        raise DataError("the table's column names repeat once written as text (e.g. 1 and '1'); rename them")
    return renamed


def require_columns(schema: Schema, df, what: str) -> None:
    """Refuse a table that lacks columns the model generates (before any indexing or sampling)."""
    missing = [name for name in schema.names if name not in df.columns]
    if missing:
        raise IncompatibleError(f"{what} lacks column(s) {missing} that the model was trained on; "
                                "give a table like the training table")


def check_trainable(schema: Schema, rows: int) -> None:
    """Refuse, before any encoding, a table a model cannot learn from."""
    if rows < 2:
        raise DataError(f"the table has {rows} row; a model learns from many rows: pass the whole table")
    if not any(c.width() for c in schema.modelled):
        raise DataError("every modelled column is constant; there is nothing to learn: add columns that vary")
    if schema.conditions and not any(c.width() for c in schema.conditions):
        names = ", ".join(repr(c.name) for c in schema.conditions)
        raise DataError(f"the condition column(s) {names} hold one value each, so there is nothing to condition "
                        "on: drop them from --condition-columns, or condition on a column that varies")


def _json_value(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if hasattr(v, "isoformat"):  # a constant timestamp
        return v.isoformat()
    raise TypeError(f"{type(v).__name__} is not JSON")


# ---- schema inference ------------------------------------------------------------------
def infer_schema(df, kinds: dict[str, str] | None = None, encoding: str = "quantile",
                 condition_columns: list[str] | None = None, seed: int = 0) -> Schema:
    """Infer each column's kind (or take it from `kinds`) and fit its encoding on df."""
    if encoding not in ("quantile", "gmm"):
        raise ConfigError(f"encoding={encoding!r} must be quantile or gmm")
    if len(df) == 0 or df.shape[1] == 0:
        raise DataError("the table is empty; pass a table with a header and at least one row")
    df = str_columns(df)
    names = list(df.columns)
    kinds, conds = check_request(names, kinds, condition_columns)
    columns = every_column([lambda name=name: _infer_column(name, df[name], kinds.get(name), encoding, seed)
                            for name in names])
    schema = Schema(columns, encoding, conds)
    for name in conds:
        schema.condition_rows[name] = condition_values(schema.column(name), df[name])
    return schema


def every_column(makers) -> list[Column]:
    """Each maker's Column; the DataErrors of all columns at once, so a table with an id, an email
    and a comment column is fixed in one go, not one column per run."""
    columns, errors = [], []
    for make in makers:
        try:
            columns.append(make())
        except DataError as e:
            errors.append(str(e))
    if len(errors) == 1:
        raise DataError(errors[0])
    if errors:
        raise DataError(f"{len(errors)} columns cannot be modelled as they are: " + "; ".join(errors))
    return columns


def condition_values(col: Column, s) -> list[Any]:
    """A condition column's training values as JSON values (numbers for numeric kinds, datetimes
    as seconds), None where missing: what sampling draws conditions from."""
    import pandas as pd

    values = to_numbers(col, s) if col.numeric else s.tolist()
    return [None if pd.isna(v) else plain(v) for v in values]


def check_request(names: list[str], kinds: dict[str, str] | None,
                  condition_columns: list[str] | None) -> tuple[dict[str, str], list[str]]:
    """Declared kinds and condition columns checked against the table's column names."""
    kinds = dict(kinds or {})
    if len(set(names)) != len(names):
        raise DataError("the table has repeated column names; rename them so each is unique")
    for name, kind in kinds.items():
        if name not in names:
            raise ConfigError(f"--column-kind names column {name!r}, which the table lacks; columns: {', '.join(names)}")
        if kind not in KINDS[:-1]:
            raise ConfigError(f"--column-kind {name}={kind}: kind must be one of {', '.join(KINDS[:-1])}")
    conds = split_names(condition_columns, names) if isinstance(condition_columns, str) else list(condition_columns or [])
    for name in conds:
        if name not in names:
            raise ConfigError(f"--condition-columns names {name!r}, which the table lacks; columns: {', '.join(names)}")
    if len(set(conds)) != len(conds):
        raise ConfigError(f"--condition-columns names a column twice: {', '.join(conds)}")
    if len(conds) == len(names):
        raise ConfigError("every column is a condition column; leave at least one column to generate")
    return kinds, conds


def split_names(text: str, names: list[str]) -> list[str]:
    """'sex,age' -> ['sex', 'age'] where a column's own name may hold commas: the longest run of
    comma-separated pieces that names a column wins ('city, state,age' -> ['city, state', 'age'] when
    'city, state' is a column); a piece that names no column is kept, stripped, for the caller to report."""
    pieces, out, i = text.split(","), [], 0
    while i < len(pieces):
        j, name = i + 1, pieces[i].strip()
        for end in range(len(pieces), i, -1):
            run = ",".join(pieces[i:end])
            if run in names or run.strip() in names:
                j, name = end, run if run in names else run.strip()
                break
        if name:
            out.append(name)
        i = j
    return out


def plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _infer_column(name: str, s, kind: str | None, encoding: str, seed: int) -> Column:
    missing = s.isna()
    if missing.all():
        raise DataError(f"column {name!r} is entirely missing; drop it from the table")
    values = s[~missing]
    dtype = str(s.dtype)
    rate = float(missing.mean())
    try:
        distinct = values.nunique()
    except TypeError:  # unhashable cells
        raise nested_error(name, values) from None
    if kind is None and distinct == 1 and rate == 0:  # one value, no gaps: nothing to learn
        kind = "constant"
    if kind is None:
        kind = _guess_kind(name, values)
    if kind == "constant":
        return Column(name, "constant", dtype, value=plain(values.iloc[0]))
    if kind == "datetime" and dtype == "object" and values.astype(str).str.fullmatch(ZONED).any():
        dtype = ZONED_DTYPE  # "...+02:00" text: sampled back as UTC instants that say so
    col = Column(name, kind, dtype, rate)
    if kind in ("categorical", "boolean"):
        if kind == "boolean" and not set(values.unique()) <= {True, False}:
            raise DataError(f"column {name!r} is not boolean (values {sorted(map(str, values.unique()))[:5]}); "
                            f"use --column-kind {name}=categorical")
        labels = values.unique().tolist()
        col.categories = sorted((plain(v) for v in labels), key=lambda v: (str(type(v)), v))
        if err := label_error(name, col.categories):
            raise err
        if dtype == "category":  # the dtype comes back whole: "category" alone would sort and drop labels
            col.levels, col.ordered = [plain(v) for v in s.dtype.categories], bool(s.dtype.ordered)
        return col
    x = to_numbers(col, values)
    col.min, col.max = float(x.min()), float(x.max())
    if kind == "integer" and not np.all(x == np.round(x)):
        raise DataError(f"column {name!r} has fractions but was declared integer; use --column-kind {name}=continuous")
    if kind == "datetime":
        col.step = time_step(x)
    if kind == "continuous":
        col.decimals = decimals(x)
    n_q = min(N_QUANTILES, len(x))
    col.quantiles = np.quantile(x, np.linspace(0, 1, n_q)).tolist()
    if encoding == "gmm":
        _fit_gmm(col, x, seed)
    return col


def to_numbers(col: Column, s) -> np.ndarray:
    """A numeric column as float64 (datetimes as seconds since 1970, durations in seconds); NaN
    where missing. A value that is there but gives no finite number is a DataError naming it."""
    x = _numbers(col, s)
    bad = ~np.isfinite(x) & ~s.isna().to_numpy()
    if bad.any():
        example = s[bad].iloc[0]
        if col.kind == "datetime":
            raise DataError(f"column {col.name!r} has {int(bad.sum())} value(s) that are not dates vaekit can read "
                            f"(e.g. {example!r}; dates are ISO text within the years 1678..2261): fix or blank them, "
                            f"or pass --column-kind {col.name}=categorical")
        raise DataError(f"column {col.name!r} holds infinite values (e.g. {plain(example)!r}); replace them with "
                        "numbers or blanks")
    return x


def _numbers(col: Column, s) -> np.ndarray:
    import warnings

    import pandas as pd

    if pd.api.types.is_timedelta64_dtype(s):
        return s.dt.total_seconds().to_numpy(dtype=np.float64)  # NaT: NaN
    if col.kind == "datetime" and pd.api.types.is_numeric_dtype(s):
        return s.to_numpy(dtype=np.float64)  # already seconds (drawn condition rows)
    if col.kind == "datetime":
        with warnings.catch_warnings():  # pandas warns when it parses value by value; unparsed ones are refused
            warnings.simplefilter("ignore", UserWarning)
            t = pd.to_datetime(s, errors="coerce", utc=True)  # offsets (even mixed ones) to UTC; naive as UTC
        ns = t.dt.tz_convert(None).to_numpy(dtype="datetime64[ns]").astype(np.int64).astype(np.float64)
        return np.where(t.isna().to_numpy(), np.nan, ns / 1e9)
    try:
        return pd.to_numeric(s, errors="raise").to_numpy(dtype=np.float64)
    except (ValueError, TypeError):
        raise DataError(f"column {col.name!r} has values that are not numbers but is {col.kind}; "
                        f"use --column-kind {col.name}=categorical") from None


def _fit_gmm(col: Column, x: np.ndarray, seed: int) -> None:
    """Mode-specific normalisation: a Dirichlet-process Gaussian mixture (at most 10 modes,
    those with weight > 0.005 kept), reduced to plain numbers."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.mixture import BayesianGaussianMixture

    k = int(min(10, len(np.unique(x))))
    gmm = BayesianGaussianMixture(n_components=k, weight_concentration_prior_type="dirichlet_process",
                                  weight_concentration_prior=1e-3, max_iter=100, random_state=seed)
    with warnings.catch_warnings():  # a mode that has not settled after 100 steps is still usable
        warnings.simplefilter("ignore", ConvergenceWarning)
        gmm.fit(x.reshape(-1, 1))
    keep = gmm.weights_ > 5e-3
    col.means = gmm.means_[keep, 0].tolist()
    col.stds = np.sqrt(gmm.covariances_[keep].reshape(-1)).clip(1e-6).tolist()
    col.weights = (gmm.weights_[keep] / gmm.weights_[keep].sum()).tolist()


def column_kinds(specs: list[str] | None) -> dict[str, str]:
    """`--column-kind col=kind` arguments -> {col: kind}."""
    kinds = {}
    for spec in specs or []:
        name, sep, kind = spec.partition("=")
        if not sep or not name:
            raise ConfigError(f"--column-kind {spec!r} must look like COLUMN=KIND, e.g. year=categorical")
        kinds[name] = kind
    return kinds

