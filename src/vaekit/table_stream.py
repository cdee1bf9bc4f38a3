"""Tables larger than memory: the schema inferred chunk by chunk, the rows encoded to disk.

A CSV is read CHUNK_BYTES of text at a time (pandas `chunksize`), a Parquet file by record
batches (pyarrow). Each column keeps running statistics instead of its values: rows, gaps,
dtypes, exact min/max, integer-ness, the text checks of table_kinds._guess_kind (on each distinct
label once, weighted by its count), its distinct values (at most MAX_DISTINCT), and a seeded
reservoir sample of at most RESERVOIR numeric values (Vitter 1985, algorithm R): quantiles
and GMM modes are fitted on the reservoir (the end quantiles are the exact min and max).
Condition columns keep a joint reservoir of rows (schema.condition_rows). A reservoir holds
every value in file order while the stream fits in it, so a table of at most RESERVOIR rows
gets exactly the schema tables.infer_schema gives it.

A second pass encodes each chunk (table_codec.encode) into float32 .npy files (written under
a temporary name, then renamed) that training reads batch by batch (stream.NpyRows): resident
memory is about one chunk plus the reservoirs, however long the table.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .errors import ConfigError, DataError
from .table_codec import encode
from .table_io import (COMPRESSED, check_decimal, check_missing, csv_layout, drop_trailing, open_table, text_gaps,
                       unreadable)
from .table_kinds import (DECIMAL_COMMA, ISO_DATE, MAX_CATEGORIES, MAX_CATEGORY_INTEGERS, TIME_STEPS, counting_error,
                          decimal_comma, decimals, formatted_error, formatted_numbers, label_error, loose_dates_error,
                          nested_error, placeholder_error, time_step)
from .tables import (N_QUANTILES, ZONED, ZONED_DTYPE, Column, Schema, _fit_gmm, check_request, check_trainable,
                     condition_values, every_column, plain, to_numbers)

AUTO_STREAM_TABLE_BYTES = 256 << 20  # fit_table(path, stream=None) reads a file over 256 MiB in chunks
COMPRESSION_RATIO = 10  # a gzipped CSV is 5-10x smaller than its text: the higher end, so large ones stream
CHUNK_BYTES = 4 << 20  # CSV text per chunk (its DataFrame is a few times larger)
PARQUET_CHUNK_ROWS = 65_536  # rows per Parquet record batch
RESERVOIR = 100_000  # numeric values per column (and condition rows) kept for quantiles and GMM
MAX_DISTINCT = 10_000  # distinct values tracked per column; a label column with more is refused


def should_stream_table(path: str | os.PathLike, stream: bool | None) -> bool:
    """stream=None: read in chunks when the file is larger than AUTO_STREAM_TABLE_BYTES (a compressed
    CSV counted at COMPRESSION_RATIO times its size: its text is what memory holds)."""
    if stream is not None:
        return stream
    p = Path(path)
    ratio = COMPRESSION_RATIO if p.suffix.lower() in COMPRESSED else 1
    return p.is_file() and p.stat().st_size * ratio > AUTO_STREAM_TABLE_BYTES


def read_chunks(path: str | os.PathLike, sep: str | None = None, chunk_rows: int | None = None,
                text: tuple[str, ...] = (), missing: list[str] | tuple[str, ...] = (),
                decimal: str = ".") -> Iterator[Any]:
    """DataFrames of at most `chunk_rows` rows, in file order (default: about CHUNK_BYTES of
    CSV text, PARQUET_CHUNK_ROWS rows of Parquet). CSV columns in `text` are read as text;
    cells holding a `missing` text are gaps, `decimal` is the decimal mark (as table_io.read_table)."""
    import pandas as pd

    missing, decimal = check_missing(missing), check_decimal(decimal)
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file; pass a .csv or .parquet table")
    if chunk_rows is not None and chunk_rows < 1:
        raise ConfigError(f"chunk_rows={chunk_rows} must be >= 1")
    csv_file = p.suffix.lower() not in (".parquet", ".pq")
    sep, layout = csv_layout(p, sep) if csv_file else (sep, {})  # its errors are already clear
    try:
        if not csv_file:
            import pyarrow.parquet as pq

            f = pq.ParquetFile(p)
            index = (f.schema_arrow.pandas_metadata or {}).get("index_columns", [])
            names = [n for n in f.schema_arrow.names if n not in index]  # a saved pandas index is not data
            for batch in f.iter_batches(batch_size=chunk_rows or PARQUET_CHUNK_ROWS, columns=names):
                yield text_gaps(batch.to_pandas(), missing)
            return
        rows = chunk_rows or _rows_per_chunk(p)
        layout["dtype"] = {**layout.get("dtype", {}), **{c: str for c in text}} or None
        with pd.read_csv(p, sep=sep, chunksize=rows, na_values=list(missing) or None, decimal=decimal,
                         **layout) as reader:
            for chunk in reader:
                yield drop_trailing(chunk, p)
    except DataError:
        raise
    except (UnicodeDecodeError, ValueError, OSError, pd.errors.ParserError) as e:
        raise unreadable(p, e) from None


def _rows_per_chunk(p: Path) -> int:
    """Rows in about CHUNK_BYTES of CSV, from the lengths of the first lines."""
    with open_table(p, "rb") as f:  # the text, not its compressed bytes
        head = f.read(1 << 16)
    lines = max(1, head.count(b"\n"))
    return max(1000, CHUNK_BYTES * lines // max(1, len(head)))


class Reservoir:
    """Where the next items of a stream go in a uniform sample of at most `size` (algorithm R),
    seeded. While the stream is no longer than `size`, the sample is the stream, in order."""

    def __init__(self, size: int, seed: list[int]):
        self.size, self.seen, self.rng = size, 0, np.random.default_rng(seed)

    def place(self, n: int) -> tuple[int, np.ndarray, np.ndarray]:
        """For the next n items: how many to append, then the slots (R,) that items (R,) replace, in order."""
        append = max(0, min(n, self.size - self.seen))
        pos = np.arange(append, n)  # (n - append,) positions in this batch
        slot = self.rng.integers(0, self.seen + pos + 1) if len(pos) else pos  # item t kept with p = size / (t + 1)
        self.seen += n
        keep = slot < self.size
        return append, slot[keep], pos[keep]


class ColumnStats:
    """Running statistics of one column, fed chunk by chunk; `column()` makes its Column."""

    def __init__(self, name: str, kind: str | None, seed: list[int]):
        self.name, self.kind = name, kind  # kind: declared, or None to infer
        self.rows = self.missing = 0
        self.dtypes: list[str] = []  # of chunks that hold values, first seen first
        self.first: Any = None  # the first value (a constant column's value)
        self.distinct: dict[Any, None] | None = {}  # insertion-ordered set; None past MAX_DISTINCT
        self.types: set[type] = set()  # Python types of object-dtype values
        self.not_numbers, self.bad_example, self.iso = 0, None, True  # text cells that are not numbers; all ISO dates
        self.zoned = False  # some ISO datetime text carries a UTC offset
        self.formatted, self.formatted_example = True, None  # every label a number in spreadsheet format; one such
        self.commas = True  # every label a decimal-comma number (0,75)
        self.counting, self.last, self.head = True, None, []  # numbers up by one from row to row; the last; first two
        self.levels: list[Any] | None = None  # a category dtype's categories, in order (a union over chunks)
        self.ordered = False
        self.nonfinite, self.whole, self.numbers = False, True, True
        self.step: float | None = TIME_STEPS[0]  # as table_kinds.time_step, over every chunk
        self.decimals: int | None = 0  # as table_kinds.decimals, over every chunk
        self.lo, self.hi, self.values = np.inf, -np.inf, np.empty(0)  # values: the reservoir (R,)
        self.sample = Reservoir(RESERVOIR, seed)

    def update(self, s) -> None:
        import pandas as pd

        miss = s.isna().to_numpy()
        self.rows += len(s)
        self.missing += int(miss.sum())
        v = s[~miss]
        if len(v) == 0:
            return  # an all-missing chunk only counts gaps (pandas reads it as float64)
        if str(s.dtype) not in self.dtypes:
            self.dtypes.append(str(s.dtype))
        if self.first is None:
            self.first = v.iloc[0]
        if isinstance(v.dtype, pd.CategoricalDtype):
            seen = set(self.levels or [])
            self.levels = (self.levels or []) + [c for c in v.dtype.categories.tolist() if c not in seen]
            self.ordered = self.ordered or bool(v.dtype.ordered)
        text = v.dtype == object or isinstance(v.dtype, (pd.CategoricalDtype, pd.StringDtype))  # labels too
        try:
            counts = v.value_counts(sort=False) if text or self.distinct is not None else None  # the labels, each once
            if counts is not None and isinstance(v.dtype, pd.CategoricalDtype):
                counts = counts[counts > 0]  # a category dtype counts its unused labels too (as 0)
            if self.distinct is not None:
                self.distinct.update(dict.fromkeys(counts.index.tolist()))
        except TypeError:  # unhashable cells
            raise nested_error(self.name, v) from None
        if self.distinct is not None and len(self.distinct) > MAX_DISTINCT:
            self.distinct = None
        if text and self.kind is None:  # the text checks, on each label once and weighted by its count
            labels = counts.index
            types = set(map(type, labels))
            self.types |= types
            if types <= {str}:
                words = pd.Series(labels, dtype=object)
                bad = pd.to_numeric(words, errors="coerce").isna().to_numpy()
                self.not_numbers += int(counts.to_numpy()[bad].sum())
                if self.bad_example is None and bad.any():
                    self.bad_example = v[v.isin(labels[bad])].iloc[0]  # the first in file order
                self.iso = self.iso and bool(words.str.fullmatch(ISO_DATE).all())
                self.zoned = self.zoned or (self.iso and bool(words.str.fullmatch(ZONED).any()))
                ok, example = formatted_numbers(words)
                self.formatted = self.formatted and ok and not isinstance(v.dtype, pd.CategoricalDtype)
                self.formatted_example = self.formatted_example or example
                self.commas = self.commas and bool(words.str.fullmatch(DECIMAL_COMMA).all())
        numeric = pd.api.types.is_numeric_dtype(v) and not pd.api.types.is_bool_dtype(v)
        if self.kind is not None and self.kind in ("continuous", "integer", "datetime"):
            x = to_numbers(Column(self.name, self.kind, ""), v)  # refuses text, as infer_schema does
        elif self.kind is None and pd.api.types.is_timedelta64_dtype(v):
            x = to_numbers(Column(self.name, "continuous", ""), v)  # durations, in seconds
        elif self.kind is None and numeric:
            x = v.to_numpy(dtype=np.float64)
            self.nonfinite = self.nonfinite or not np.isfinite(x).all()
            if self.counting:  # as table_kinds._guess_kind, across chunk boundaries too
                self.counting = bool(np.all(np.diff(x) == 1)) and (self.last is None or x[0] == self.last + 1)
                self.last, self.head = x[-1], (self.head + x[:2].tolist())[:2]
        elif self.kind is None and (pd.api.types.is_datetime64_any_dtype(v)
                                     or (text and self.iso and self.types <= {str})):
            x = to_numbers(Column(self.name, "datetime", ""), v)
        else:
            self.numbers = False  # labels: no numeric statistics
            return
        self.lo, self.hi = min(self.lo, float(x.min())), max(self.hi, float(x.max()))
        self.whole = self.whole and bool(np.all(x == np.round(x)))
        if self.step is not None:  # the steps divide each other: the finest chunk's decides
            step = time_step(x)
            self.step = None if step is None else min(self.step, step)
        if self.decimals is not None:  # the chunk that needs the most places decides
            places = decimals(x)
            self.decimals = None if places is None else max(self.decimals, places)
        append, slot, item = self.sample.place(len(x))
        self.values = np.concatenate([self.values, x[:append]]) if append else self.values
        self.values[slot] = x[item]  # repeated slots: the later item wins, as in the sequential algorithm

    def mixed(self) -> bool:
        """Numbers in some chunks and text in others: pandas would read the whole column as
        text, so the column must be read again as text."""
        kinds = {_kind(d) for d in self.dtypes}
        bools_with_gaps = kinds <= {"O", "b"} and self.types <= {bool}
        return "O" in kinds and bool(kinds & {"i", "u", "f", "b"}) and not bools_with_gaps

    def dtype(self) -> str:
        """The dtype pandas gives the whole column: int and float chunks make float64, bool and
        object (bools with gaps) make object; an int or bool column with gaps is float64 / object."""
        d = self.dtypes[0]
        if len(self.dtypes) > 1:
            kinds = {_kind(t) for t in self.dtypes}
            d = "float64" if kinds <= {"i", "u", "f"} else "object" if kinds <= {"b", "O"} else d
        if self.missing and _kind(d) in "iu":
            return "float64"
        return "object" if self.missing and d == "bool" else d

    def column(self, encoding: str, seed: int) -> Column:
        """The Column infer_schema would make, from the statistics."""
        name = self.name
        if self.missing == self.rows:
            raise DataError(f"column {name!r} is entirely missing; drop it from the table")
        dtype, rate = self.dtype(), self.missing / self.rows
        kind = self.kind
        if kind is None and self.distinct is not None and len(self.distinct) == 1 and rate == 0:
            kind = "constant"
        kind = kind or self._guess(dtype)
        if kind == "constant":
            return Column(name, "constant", dtype, value=plain(self.first))
        if kind == "datetime" and dtype == "object" and self.zoned:
            dtype = ZONED_DTYPE  # as tables._infer_column
        col = Column(name, kind, dtype, rate)
        if kind in ("categorical", "boolean"):
            if self.distinct is None:
                raise DataError(f"column {name!r} has more than {MAX_DISTINCT} distinct labels, too many to one-hot "
                                f"when streaming; drop it, or read the table into memory (--no-stream)")
            labels = [float(v) for v in self.distinct] if dtype.startswith("float") else list(self.distinct)
            if kind == "boolean" and not set(labels) <= {True, False}:
                raise DataError(f"column {name!r} is not boolean (values {sorted(map(str, labels))[:5]}); "
                                f"use --column-kind {name}=categorical")
            col.categories = sorted((plain(v) for v in labels), key=lambda v: (str(type(v)), v))
            if err := label_error(name, col.categories):
                raise err
            if dtype == "category":  # as tables._infer_column
                col.levels, col.ordered = [plain(v) for v in self.levels], self.ordered
            return col
        if not self.numbers:
            raise DataError(f"column {name!r} has values that are not numbers but is {kind}; "
                            f"use --column-kind {name}=categorical")
        col.min, col.max = self.lo, self.hi
        if kind == "datetime":
            col.step = self.step
        if kind == "continuous":
            col.decimals = self.decimals
        if kind == "integer" and not self.whole:
            raise DataError(f"column {name!r} has fractions but was declared integer; "
                            f"use --column-kind {name}=continuous")
        q = np.quantile(self.values, np.linspace(0, 1, min(N_QUANTILES, self.sample.seen)))
        q[0], q[-1] = self.lo, self.hi  # the exact ends, whatever the reservoir holds
        col.quantiles = q.tolist()
        if encoding == "gmm":
            _fit_gmm(col, self.values, seed)
        return col

    def _guess(self, dtype: str) -> str:
        """table_kinds._guess_kind's rules, on the running statistics."""
        import pandas as pd

        name, t, labels = self.name, pd.api.types.pandas_dtype(dtype), self.distinct
        if pd.api.types.is_bool_dtype(t) or (t == object and labels is not None and set(labels) <= {True, False}):
            return "boolean"
        if pd.api.types.is_datetime64_any_dtype(t):
            return "datetime"
        if pd.api.types.is_numeric_dtype(t) or pd.api.types.is_timedelta64_dtype(t):  # durations: seconds
            if self.nonfinite:
                raise DataError(f"column {name!r} holds infinite values; replace them with numbers or blanks")
            if self.counting and self.head and self.rows - self.missing > MAX_CATEGORIES and \
                    not pd.api.types.is_timedelta64_dtype(t):
                raise counting_error(name, self.head)
            if self.whole and labels is not None and len(labels) <= MAX_CATEGORY_INTEGERS:
                return "categorical"
            return "integer" if self.whole else "continuous"
        types = self.types
        if any(issubclass(c, (int, float, np.number)) for c in types) and any(issubclass(c, str) for c in types):
            raise DataError(f"column {name!r} mixes numbers and text; clean it, or pass "
                            f"--column-kind {name}=categorical to treat every value as a label")
        n = self.rows - self.missing
        if self.types <= {str} and self.formatted and self.formatted_example is not None and not self.commas and \
                (labels is None or len(labels) > MAX_CATEGORY_INTEGERS):  # as table_kinds._guess_kind
            raise formatted_error(name, self.formatted_example)
        if self.types <= {str}:
            if 0 < self.not_numbers <= 0.05 * n:
                raise DataError(f"column {name!r} mixes numbers and text (e.g. {self.bad_example!r}); fix those "
                                f"cells, or pass --column-kind {name}=categorical to treat every value as a label")
            if self.iso:
                return "datetime"
            if self.not_numbers and labels is not None and \
                    (err := placeholder_error(name, labels, self.not_numbers / n)):
                raise err
        if labels is None:
            raise DataError(f"column {name!r} has more than {MAX_DISTINCT} distinct labels (an identifier or free "
                            "text?); drop it, or read the table into memory (--no-stream) to model it anyway")
        if self.types <= {str} and len(labels) > MAX_CATEGORIES and pd.Series(list(labels), dtype=object).str.fullmatch(
                DECIMAL_COMMA).all():
            raise decimal_comma(name, next(iter(labels)))
        if self.types <= {str} and len(labels) > MAX_CATEGORIES and (err := loose_dates_error(name, labels)):
            raise err
        if len(labels) > MAX_CATEGORIES and len(labels) > 0.5 * n:
            raise DataError(f"column {name!r} has {len(labels)} distinct labels in {n} rows (an identifier or "
                            f"free text?); drop it, or pass --column-kind {name}=categorical to model it anyway")
        return "categorical"


def _kind(dtype: str) -> str:
    """numpy's one-letter kind of a dtype name; "O" for object and pandas' own dtypes."""
    try:
        return np.dtype(dtype).kind
    except TypeError:
        return "O"


class RowSample:
    """A joint reservoir of the condition columns' rows (raw values, as read)."""

    def __init__(self, names: list[str], seed: int):
        self.names, self.rows = names, {n: [] for n in names}
        self.sample = Reservoir(RESERVOIR, [seed, 1 << 31])

    def update(self, chunk) -> None:
        if not self.names:
            return
        append, slot, item = self.sample.place(len(chunk))
        for name, kept in self.rows.items():
            values = chunk[name].tolist()
            kept.extend(values[:append])
            for s, i in zip(slot.tolist(), item.tolist()):
                kept[s] = values[i]


def infer_schema_chunked(path: str | os.PathLike, kinds: dict[str, str] | None = None, encoding: str = "quantile",
                         condition_columns: list[str] | None = None, seed: int = 0, sep: str | None = None,
                         chunk_rows: int | None = None, missing: tuple[str, ...] = (),
                         decimal: str = ".") -> tuple[Schema, int, tuple[str, ...]]:
    """tables.infer_schema for a table read in chunks, never whole (see the module docstring):
    the schema, the number of rows, and the CSV columns to read as text (numbers in some
    chunks, words in others; read again as text, as pandas reads such a column at once)."""
    import pandas as pd

    if encoding not in ("quantile", "gmm"):
        raise ConfigError(f"encoding={encoding!r} must be quantile or gmm")
    text: tuple[str, ...] = ()
    while True:
        stats, rows = None, None
        for chunk in read_chunks(path, sep, chunk_rows, text, missing, decimal):
            if stats is None:
                names = [str(n) for n in chunk.columns]
                kinds, conds = check_request(names, kinds, condition_columns)
                stats = [ColumnStats(n, kinds.get(n), [seed, i]) for i, n in enumerate(names)]
                rows = RowSample(conds, seed)
            for st, name in zip(stats, chunk.columns):
                st.update(chunk[name])
            rows.update(chunk)
        if stats is None or stats[0].rows == 0:
            raise DataError(f"{path} has no rows (or no columns); a table needs a header and at least one row")
        mixed = tuple(st.name for st in stats if st.mixed())
        if not mixed or set(mixed) <= set(text) or Path(path).suffix.lower() in (".parquet", ".pq"):
            break
        text = tuple(sorted(set(text) | set(mixed)))
    columns = every_column([lambda st=st: st.column(encoding, seed) for st in stats])
    schema = Schema(columns, encoding, conds, missing_tokens=list(missing), decimal=decimal)
    for name in conds:
        schema.condition_rows[name] = condition_values(schema.column(name), pd.Series(rows.rows[name]))
    return schema, stats[0].rows, text


def write_encoded(schema: Schema, path: str | os.PathLike, folder: Path, rows: int, sep: str | None = None,
                  chunk_rows: int | None = None, text: tuple[str, ...] = ()) -> tuple[Path, Path | None]:
    """Encode the table chunk by chunk into folder/x.npy (N, D_enc) float32 and, with
    condition columns, folder/c.npy (N, C). Each is written under a temporary name, then renamed.
    The schema's missing_tokens are read as gaps, as when it was inferred."""
    targets = {"x": schema.modelled, "c": schema.conditions}
    widths = {k: sum(c.width() for c in cols) for k, cols in targets.items()}
    files = {k: open(folder / f".{k}.npy.tmp", "wb") for k in targets if k == "x" or schema.condition_columns}
    try:
        for k, f in files.items():
            header = {"descr": "<f4", "fortran_order": False, "shape": (rows, widths[k])}
            np.lib.format.write_array_header_1_0(f, header)
        seen = 0
        for chunk in read_chunks(path, sep, chunk_rows, text, schema.missing_tokens, schema.decimal):
            seen += len(chunk)
            if seen > rows:
                break
            for k, f in files.items():
                f.write(np.ascontiguousarray(encode(schema, chunk, targets[k]), dtype="<f4").data)  # (n, D)
    finally:
        for f in files.values():
            f.close()
    if seen != rows:
        raise DataError(f"{path} changed while it was read ({rows} rows, then {seen}); train again on a file "
                        "that stays put")
    out = {}
    for k in files:
        out[k] = folder / f"{k}.npy"
        os.replace(folder / f".{k}.npy.tmp", out[k])
    return out["x"], out.get("c")


@contextlib.contextmanager
def encoded_table(path: str | os.PathLike, kinds: dict[str, str] | None = None, encoding: str = "quantile",
                  condition_columns: list[str] | None = None, seed: int = 0, sep: str | None = None,
                  chunk_rows: int | None = None, near: str | os.PathLike | None = None, missing: tuple[str, ...] = (),
                  decimal: str = "."):
    """(schema, x, c) for training: x (N, D_enc) and c (N, C) (None without condition columns)
    stream.NpyRows on disk. The encoded files live in a temporary folder beside `near` (the run
    folder; default: the system's temporary folder, $TMPDIR), removed on exit."""
    from .stream import NpyRows

    schema, rows, text = infer_schema_chunked(path, kinds, encoding, condition_columns, seed, sep, chunk_rows,
                                              check_missing(missing), check_decimal(decimal))
    check_trainable(schema, rows)
    parent = Path(near).resolve().parent if near is not None else None
    with tempfile.TemporaryDirectory(prefix=".vaekit-encoded-", dir=parent) as tmp:
        x_path, c_path = write_encoded(schema, path, Path(tmp), rows, sep, chunk_rows, text)
        x, c = NpyRows(x_path), None if c_path is None else NpyRows(c_path)
        x.name = Path(path).name
        try:
            yield schema, x, c
        finally:
            for rows in (x, c):
                if rows is not None:
                    rows.close()  # before their folder goes
