"""Reading and writing tables safely: CSV (plain or compressed) and Parquet files to pandas
DataFrames and back (the schema they are modelled by is inferred in tables.py).

A CSV's layout is sniffed before pandas reads it (separator, Excel's 'sep=' line and byte-order
mark, a saved index, trailing separators, leading-zero codes), and what pandas would silently
get wrong (repeated or blank header names, non-UTF-8 text) is a DataError that says how to fix
the file. Writing is atomic, and a CSV written with a run's schema looks like its training file
(gap words, whole numbers, decimal commas).
"""

from __future__ import annotations

import csv
import io
import itertools
import lzma
import re
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ConfigError, DataError
from .tables import Column, Schema, plain

TABLE_SUFFIXES = (".csv", ".tsv", ".parquet", ".pq")
COMPRESSED = (".gz", ".bz2", ".xz")  # a compressed CSV (data.csv.gz), read as pandas reads it


def is_table_path(path: str | Path) -> bool:
    p = Path(path)
    suffix = Path(p.stem).suffix if p.suffix.lower() in COMPRESSED else p.suffix
    return suffix.lower() in TABLE_SUFFIXES


def open_table(p: Path, mode: str = "r", **kwargs):
    """The file, decompressed when its name ends in one of COMPRESSED (text mode: "r", bytes: "rb")."""
    import bz2
    import gzip

    opener = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}.get(p.suffix.lower())
    if opener is None:
        return open(p, mode, **kwargs)
    return opener(p, mode + "t" if mode == "r" else mode, **kwargs)


def read_table(path: str | Path, sep: str | None = None, missing: list[str] | tuple[str, ...] = (),
               decimal: str = "."):
    """A pandas DataFrame from .csv/.tsv (separator sniffed from the header when not given:
    ',', ';' or tab) or .parquet. Cells holding one of the `missing` texts (e.g. "?") are gaps,
    as blank cells are; `decimal` is a CSV's decimal mark ("," for 0,75). Anything that does not
    parse as a table is a DataError."""
    import pandas as pd

    missing, decimal = check_missing(missing), check_decimal(decimal)
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: no such file; pass a .csv or .parquet table")
    csv_file = p.suffix.lower() not in (".parquet", ".pq")
    sep, layout = csv_layout(p, sep) if csv_file else (sep, {})  # its errors are already clear
    try:
        if not csv_file:
            df = text_gaps(pd.read_parquet(p), missing)
        else:
            df = drop_trailing(pd.read_csv(p, sep=sep, na_values=list(missing) or None, decimal=decimal, **layout), p)
    except DataError:
        raise
    except (UnicodeDecodeError, ValueError, OSError, pd.errors.ParserError) as e:
        raise unreadable(p, e) from None
    if df.shape[1] == 0 or len(df) == 0:
        raise DataError(f"{p} has no rows (or no columns); a table needs a header and at least one row")
    return df


def check_missing(missing) -> tuple[str, ...]:
    """The --missing texts as a tuple, each a non-empty string (a blank cell is a gap anyway)."""
    missing = (missing,) if isinstance(missing, str) else tuple(missing or ())
    bad = [m for m in missing if not isinstance(m, str) or not m]
    if bad:
        raise ConfigError(f"missing={bad!r}: each --missing value is the text of a gap cell, e.g. --missing '?' "
                          "(blank cells are gaps already)")
    return missing


def check_decimal(decimal: str) -> str:
    if decimal not in (".", ","):
        raise ConfigError(f"decimal={decimal!r} must be '.' or ',' (--decimal: the CSV's decimal mark)")
    return decimal


def text_gaps(df, missing: tuple[str, ...]):
    """df with the `missing` texts of its text columns made gaps, and a text column left holding
    only numbers made numeric, as pandas' CSV reader does with na_values (Parquet keeps types);
    Python decimals and dates as numbers and datetimes (python_objects)."""
    import pandas as pd

    df = python_objects(df)
    if not missing:
        return df
    df = df.copy(deep=False)  # the caller's frame stays as it was
    for name in df.columns:
        s = df[name]
        if s.dtype == object and s.isin(missing).any():
            s = s.mask(s.isin(missing))
            rest = s.dropna()
            if len(rest) and rest.map(lambda v: isinstance(v, str)).all() and \
                    pd.to_numeric(rest, errors="coerce").notna().all():
                s = pd.to_numeric(s)
            df[name] = s
    return df


def python_objects(df):
    """df with the columns pandas holds as Python objects that are numbers or dates made float64
    and datetime64: decimal.Decimal (SQL NUMERIC, Parquet decimal128) and datetime.date (SQL
    DATE, Parquet date32), which would otherwise be modelled as labels. df itself when none is."""
    import datetime
    import decimal

    import pandas as pd

    out = df
    for name in df.columns:
        s = df[name]
        present = s.notna().to_numpy()
        if s.dtype != object or not present.any():
            continue
        first = s.iloc[int(present.argmax())]
        if isinstance(first, decimal.Decimal):
            if not set(map(type, s[present])) <= {decimal.Decimal, int, float}:
                continue  # text among them: the usual "mixes numbers and text"
            new = pd.to_numeric(s).astype(np.float64)
        elif isinstance(first, datetime.date) and not isinstance(first, datetime.datetime):
            if not set(map(type, s[present])) <= {datetime.date}:
                continue
            new = pd.to_datetime(s, errors="coerce")
            if new.isna().sum() > (~present).sum():  # 9999-12-31 and the like: to_numbers names them
                example = s[present & new.isna().to_numpy()].iloc[0]
                raise DataError(f"column {name!r} has dates pandas cannot hold (e.g. {example}; dates are within the "
                                "years 1678..2261): blank them, or convert the column to text")
        else:
            continue
        if out is df:
            out = df.copy(deep=False)  # the caller's frame stays as it was
        out[name] = new
    return out


def csv_separator(p: Path, sep: str | None) -> tuple[str, int]:
    """`sep`, or the one of ',', ';' and tab that the header line holds most of; and the lines
    before the header: 1 when the file starts with Excel's separator line ('sep=;'), which names it."""
    with open_table(p, encoding="utf-8-sig", errors="strict") as f:
        header = f.readline()
    hint = re.fullmatch(r"sep=(.)", header.rstrip("\r\n"))
    if hint:
        return sep or hint.group(1), 1
    return sep or max([",", ";", "\t"], key=header.count), 0


SNIFF_LINES = 1000  # data lines csv_layout reads for leading zeros
LEADING_ZERO = re.compile(r"[+-]?0\d+")  # 02134: a code, not the number 2134
TRAILING = "\x00trailing"  # the name given to the empty field after a trailing separator; dropped once read


def csv_layout(p: Path, sep: str | None) -> tuple[str, dict[str, Any]]:
    """The separator and pandas.read_csv's layout arguments: index_col=0 when the header's first
    name is empty (a pandas index saved with the table, `df.to_csv(path)`: row numbers, not data);
    names ending in TRAILING when the lines end with a separator (Excel and many exports write
    'a,b,'), so pandas neither calls the empty field 'Unnamed: 2' nor, when only the data lines
    have it, takes the first column for an index and shifts every value one column left. A header
    that repeats a name is refused: pandas would rename the copy ('a.1') and the synthetic table's
    header would not be the real one's. A UTF-8 byte-order mark (Excel's "CSV UTF-8") is not part
    of the first name, nor Excel's first line 'sep=;' a row. When every field after a separator
    starts with a space ('name, age, city'), the spaces are layout (skipinitialspace), not part of
    names and labels. Columns with a leading zero ('02134', '000566') in the first SNIFF_LINES
    lines are read as text: codes such as ZIP codes, which as numbers would lose the zero."""
    try:
        sep, skip = csv_separator(p, sep)
        if len(sep) != 1:  # a regular expression: pandas' own rules apply
            return sep, {"skiprows": skip}
        with open_table(p, encoding="utf-8-sig", errors="strict", newline="") as f:
            lines = csv.reader(itertools.islice(f, skip, None), delimiter=sep)
            header, rows = next(lines, []), list(itertools.islice(lines, SNIFF_LINES))
    except (UnicodeDecodeError, csv.Error, OSError, EOFError, lzma.LZMAError) as e:  # not text; a damaged archive
        raise unreadable(p, e) from None
    spaced = len(header) > 1 and all(field[:1] in ("", " ") for row in [header] + rows for field in row[1:])
    if spaced:  # 'name, age, city': the space after each separator is layout, not part of names and labels
        header, rows = [h.lstrip(" ") for h in header], [[f.lstrip(" ") for f in row] for row in rows]
    repeated = sorted({name for name in header if name and header.count(name) > 1})
    if repeated:
        raise DataError(f"{p}: the header repeats the column name(s) {repeated}; give each column its own name")
    index = len(header) > 1 and header[0] == ""
    first = rows[0] if rows else []
    trailing = (len(header) > 1 + index and header[-1] == "") or \
        (len(header) > 0 and len(first) == len(header) + 1 and first[-1] == "")
    names = header[:-1] if trailing and header[-1] == "" else header
    blank = [i + 1 for i, name in enumerate(names) if name == "" and not (i == 0 and index)]
    if blank:  # pandas would call it 'Unnamed: N', and the synthetic table's header would say so
        raise DataError(f"{p}: column(s) {blank} of the header have no name; give every column a name")
    codes = {name: str for i, name in enumerate(names) if name and
             any(i < len(row) and LEADING_ZERO.fullmatch(row[i].strip().strip("\"")) for row in rows)}
    layout = {"index_col": 0 if index else None, "skiprows": skip, "skipinitialspace": spaced,
              **({"dtype": codes} if codes else {})}
    if trailing:
        layout.update(names=names + [TRAILING], header=0)
    return sep, layout


PANDAS_GAP_WORDS = ("NA", "N/A", "n/a", "NaN", "nan", "NULL", "null", "None", "#N/A", "<NA>")  # read as gaps anyway


def gap_words(path: str | Path, sep: str | None = None) -> list[str]:
    """[the word a CSV writes its gaps as], when it is one pandas reads as a gap anyway ('NA' from R,
    'NULL' from SQL exports): the first such whole cell in its first SNIFF_LINES lines, so a run
    writes its gaps back the same way. [] for Parquet, a file with blank gaps, or none seen."""
    p = Path(path)
    if not is_table_path(p) or p.suffix.lower() in (".parquet", ".pq"):
        return []
    try:
        sep, skip = csv_separator(p, sep)
        if len(sep) != 1:
            return []
        with open_table(p, encoding="utf-8-sig", errors="strict", newline="") as f:
            lines = csv.reader(itertools.islice(f, skip + 1, skip + 1 + SNIFF_LINES), delimiter=sep)
            cells = {cell.strip() for row in lines for cell in row}
    except (UnicodeDecodeError, csv.Error, OSError, EOFError, lzma.LZMAError):
        return []  # reading it already said what is wrong
    return next(([w] for w in PANDAS_GAP_WORDS if w in cells), [])


def drop_trailing(df, p: Path):
    """df without the TRAILING field of lines that end with a separator; a line with a value
    there has more fields than the header names, which is refused."""
    if TRAILING not in df.columns:
        return df
    extra = df[TRAILING].notna().to_numpy()
    if extra.any():
        raise DataError(f"{p}: {int(extra.sum())} line(s) hold a value after the last named column (e.g. "
                        f"{plain(df[TRAILING][extra].iloc[0])!r}); give the header a name for it, or remove it")
    return df.drop(columns=TRAILING)


def unreadable(p: Path, e: Exception) -> DataError:
    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    if isinstance(e, UnicodeDecodeError) and bytes(e.object[:2]) in (b"\xff\xfe", b"\xfe\xff"):  # a UTF-16 mark
        return DataError(f"{p} is UTF-16 text (Excel's 'Unicode Text'); save it as UTF-8 (Excel: 'CSV UTF-8'; or "
                         "`iconv -f utf-16 -t utf-8 in.csv > out.csv`) and pass that file")
    if isinstance(e, UnicodeDecodeError) and b"\0" not in e.object[:1 << 16]:  # text, but not UTF-8
        return DataError(f"{p} is not UTF-8 text (it holds the byte {e.object[e.start]:#04x}); a CSV saved by "
                         "Excel or older Windows tools is usually cp1252 (latin-1): save it as UTF-8 (Excel: "
                         "'CSV UTF-8'; or `iconv -f cp1252 -t utf-8 in.csv > out.csv`) and pass that file")
    return DataError(f"{p} is not a readable table ({first}); pass a CSV (header line, one row per "
                     "line) or a Parquet file")


def write_table(df, path: str | Path, schema: Schema | None = None) -> Path:
    """Write df as .csv or .parquet, atomically (a temporary name, then renamed). With the run's
    `schema`, a CSV looks like the training file: gaps as its missing_tokens' first text ("?")
    if it had one, whole numbers of an integer column (or whole-number labels) with gaps as 58,
    not pandas' 58.0 (its float64, which gaps force, stays in the DataFrame), and decimal commas
    separated by ';' if it had them."""
    from .checkpoint import write_atomic

    p = check_table_output(path)
    if p.suffix.lower() in (".parquet", ".pq"):
        buf = io.BytesIO()
        df.to_parquet(buf, index=False)
        data = buf.getvalue()
    else:
        missing = schema.missing_tokens if schema is not None else []
        whole = {c.name: "Int64" for c in (schema.columns if schema is not None else [])
                 if whole_numbers(c) and c.name in df and str(df[c.name].dtype).startswith("float")}
        comma = schema is not None and schema.decimal == ","
        data = df.astype(whole).to_csv(index=False, sep="\t" if p.suffix.lower() == ".tsv" else ";" if comma else ",",
                                       na_rep=missing[0] if missing else "", decimal="," if comma else ".").encode()
    write_atomic(p, data)
    return p


def whole_numbers(col: Column) -> bool:
    """An integer column, or labels that are whole numbers (ratings 1..5): float64 only because of gaps."""
    if col.kind == "categorical":
        return bool(col.categories) and all(isinstance(v, (int, float)) and not isinstance(v, bool) and
                                            float(v).is_integer() for v in col.categories)
    return col.kind == "integer"


def check_table_output(path: str | Path, force: bool = True) -> Path:
    """Refuse a non-table suffix, a missing parent folder or (unless `force`) an existing file."""
    from .checkpoint import check_output_path

    return check_output_path(path, TABLE_SUFFIXES, "a table model writes .csv or .parquet; change -o",
                             ".csv or .parquet", force)
