"""Column kinds: how a column's kind is guessed from its values (tables.infer_schema asks
_guess_kind about every column not declared with --column-kind; table_stream applies the same
rules to running statistics), and the errors that name a column that cannot be modelled as it is
written: row numbers, numbers with thousands separators, currency or decimal commas, dates that
are not ISO 8601, gaps written as words, nested or unsaveable values, each with its fix. Also
the precision a column is sampled back at: time_step for datetimes, decimals for continuous ones.
"""

from __future__ import annotations

import shlex
from typing import Any

import numpy as np

from .errors import DataError

MAX_CATEGORY_INTEGERS = 10  # an integer column with at most this many values is categorical
MAX_CATEGORIES = 50  # more labels than this, in over half the rows: an identifier, refused unless declared
ZONE = r"(Z|[+-]\d{2}:?\d{2})"  # a UTC offset, as pandas and ISO 8601 write it
ISO_DATE = rf"\d{{4}}-\d{{1,2}}-\d{{1,2}}([ T]\d{{1,2}}:\d{{2}}(:\d{{2}}(\.\d+)?)?{ZONE}?)?"  # text read as a datetime
DECIMAL_COMMA = r"[+-]?\d+,\d+"  # 0,751: a number written with a decimal comma
GROUPED = r"[1-9]\d{0,2}(,\d{3})+(\.\d+)?|[1-9]\d{0,2}(\.\d{3})+(,\d+)?"  # 1,234.5 or 1.234,5: thousands separators
MONEY = r"[$€£¥%\s\u00a0]"  # currency and percent signs, spaces: what a spreadsheet adds to a number
MAX_PLACEHOLDERS = 3  # at most this many distinct words among a column's numbers: gaps written as words ("?")
MAX_DECIMALS = 10  # a continuous column whose values fit in this many decimal places is sampled at that precision


def _guess_kind(name: str, values) -> str:
    import pandas as pd

    if pd.api.types.is_bool_dtype(values) or (values.dtype == object and set(values.unique()) <= {True, False}):
        return "boolean"
    if pd.api.types.is_datetime64_any_dtype(values):
        return "datetime"
    duration = pd.api.types.is_timedelta64_dtype(values)
    if duration:
        values = values.dt.total_seconds()  # durations: the numeric rules on seconds; restored as timedeltas
    if pd.api.types.is_numeric_dtype(values):
        x = values.to_numpy(dtype=np.float64)
        if not np.isfinite(x).all():
            raise DataError(f"column {name!r} holds infinite values; replace them with numbers or blanks")
        if not duration and len(x) > MAX_CATEGORIES and np.all(np.diff(x) == 1):
            raise counting_error(name, x[:2])
        whole = bool(np.all(x == np.round(x)))
        if whole and values.nunique() <= MAX_CATEGORY_INTEGERS:
            return "categorical"
        return "integer" if whole else "continuous"
    types = {type(v) for v in values}
    if any(issubclass(t, (int, float, np.number)) for t in types) and any(issubclass(t, str) for t in types):
        raise DataError(f"column {name!r} mixes numbers and text; clean it, or pass "
                        f"--column-kind {name}=categorical to treat every value as a label")
    if types <= {str} and values.nunique() > MAX_CATEGORY_INTEGERS and \
            not isinstance(values.dtype, pd.CategoricalDtype):  # a few ('10%', '50%'), or a category dtype: labels
        numbers, example = formatted_numbers(pd.Series(values.unique(), dtype=object))
        if example is not None and not values.str.fullmatch(DECIMAL_COMMA).all():  # else: decimal commas?
            raise formatted_error(name, example)
    if types <= {str}:
        parsed = pd.to_numeric(values, errors="coerce")
        bad = parsed.isna()
        if 0 < bad.sum() <= 0.05 * len(values):  # mostly numbers with a few stray words
            raise DataError(f"column {name!r} mixes numbers and text (e.g. {values[bad].iloc[0]!r}); fix those "
                            f"cells, or pass --column-kind {name}=categorical to treat every value as a label")
        # ISO dates only: a looser parser would read month names such as "may" as dates
        if values.str.fullmatch(ISO_DATE).all():
            return "datetime"
        if bad.any() and (err := placeholder_error(name, values.unique(), float(bad.mean()))):
            raise err
    distinct = values.nunique()
    if types <= {str} and distinct > MAX_CATEGORIES and values.str.fullmatch(DECIMAL_COMMA).all():
        raise decimal_comma(name, values.iloc[0])
    if types <= {str} and distinct > MAX_CATEGORIES and (err := loose_dates_error(name, values.unique())):
        raise err
    if distinct > MAX_CATEGORIES and distinct > 0.5 * len(values):
        raise DataError(f"column {name!r} has {distinct} distinct labels in {len(values)} rows (an identifier or "
                        f"free text?); drop it, or pass --column-kind {name}=categorical to model it anyway")
    return "categorical"


TIME_STEPS = (86400.0, 3600.0, 60.0, 1.0)  # a day, an hour, a minute, a second: each divides the one before


def time_step(x: np.ndarray) -> float | None:
    """The coarsest of TIME_STEPS that every time x (seconds since 1970) is a multiple of: a
    column of dates comes back as dates, not at random times of day. None: finer than seconds."""
    x = x[~np.isnan(x)]
    return next((step for step in TIME_STEPS if np.all(np.mod(x, step) == 0)), None)


def decimals(x: np.ndarray) -> int | None:
    """The fewest decimal places, at most MAX_DECIMALS, that hold every value of x: prices at 2
    come back as 12.5, not 12.499999999999998 from the quantile grid. None: finer (float32 or
    measured values), sampled at full precision."""
    x = x[np.isfinite(x)]
    for d in range(MAX_DECIMALS + 1):
        if np.all(np.abs(np.round(x, d) - x) <= 1e-12 * np.abs(x)):  # float64 noise, relative: 1e-13 is not 0
            return d
    return None


def counting_error(name: str, head) -> DataError:
    """A column that counts up by one from row to row: row numbers or ids (sampled, they would be
    random numbers that repeat). Refused as a column of distinct text labels is."""
    return DataError(f"column {name!r} counts up by one from row to row ({head[0]:g}, {head[1]:g}, ...): row numbers "
                     f"or ids? drop it, or pass --column-kind {name}=integer to model it anyway")


def loose_dates_error(name: str, labels) -> DataError | None:
    """Many labels that are all dates, but not ISO 8601 ('05/10/2021', 'May 10, 2021'): vaekit
    reads only ISO text as dates (a looser parser cannot tell 05/10 from 10/05). None otherwise;
    each label needs a four-digit year, so versions such as '1.2.3' stay labels."""
    import warnings

    import pandas as pd

    words = pd.Series([str(v) for v in list(labels)[:200]], dtype=object)  # (<= 200,) enough to tell
    if len(words) == 0 or not words.str.contains(r"\d{4}").all():
        return None
    with warnings.catch_warnings():  # pandas warns when it guesses formats value by value
        warnings.simplefilter("ignore")
        if pd.to_datetime(words, errors="coerce", format="mixed").isna().any():
            return None
    return DataError(f"column {name!r} holds dates that are not ISO 8601 (e.g. {words[0]!r}), which vaekit reads as "
                     f"labels: write them as 2021-05-10 (pandas: pd.to_datetime(df[{name!r}], format=...)"
                     f".dt.strftime('%Y-%m-%d')), or pass --column-kind {name}=categorical to model them as labels")


def decimal_comma(name: str, example: Any) -> DataError:
    return DataError(f"column {name!r} holds numbers with decimal commas (e.g. {example!r}), which vaekit reads as "
                     "text; pass --decimal , (fit_table(..., decimal=',')) to read them as numbers, or "
                     f"--column-kind {name}=categorical to treat them as labels")


def formatted_numbers(words) -> tuple[bool, Any]:
    """Whether every text in `words` (a pandas Series of distinct labels) is a number once
    spreadsheet formatting is taken off ('$1,200.50', '45%', '(1,234)', '1.234,5 €'), and the
    first text that had any (None: none had, so these are plain numbers or not numbers at all)."""
    core = words.str.replace(MONEY, "", regex=True).str.replace(r"^\((.*)\)$|^[-+]", r"\1", regex=True)
    grouped = core.str.fullmatch(GROUPED).to_numpy()
    number = grouped | core.str.fullmatch(r"\d+([.,]\d+)?|[.,]\d+").to_numpy()
    # ' 12' is pandas' own spacing, not formatting; '1 234' (French, Swiss) groups thousands with a space
    shown = grouped | words.str.contains(r"[$€£¥%()]|\d[\s\u00a0\u202f]\d{3}(?!\d)").to_numpy()
    return bool(number.all()), (words[shown].iloc[0] if number.all() and shown.any() else None)


def formatted_error(name: str, example: Any) -> DataError:
    return DataError(f"column {name!r} holds numbers written with thousands separators, currency or percent signs "
                     f"(e.g. {example!r}), which vaekit would model as labels: write them as plain numbers (1234.5; "
                     f"0.45 for 45%), or pass --column-kind {name}=categorical to model every value as a label")


def nested_error(name: str, values) -> DataError:
    """A column holding lists, arrays or dicts (JSON, Parquet list columns): not one value per cell."""
    from collections.abc import Hashable

    example = next((v for v in values if not isinstance(v, Hashable)), values.iloc[0])
    return DataError(f"column {name!r} holds {type(example).__name__} values (e.g. {str(example)[:40]}), not one value "
                     "per cell; flatten it into columns (pandas.json_normalize) or drop it")


def label_error(name: str, categories: list[Any]) -> DataError | None:
    """Labels a run cannot keep in schema.json (bytes, other objects): refused before training."""
    bad = next((v for v in categories if not isinstance(v, (str, int, float)) and not hasattr(v, "isoformat")), None)
    if bad is None:
        return None
    return DataError(f"column {name!r} holds {type(bad).__name__} values (e.g. {bad!r:.40}), which a run cannot save as "
                     f"labels; convert them to text first (e.g. df[{name!r}].astype(str), or .str.decode() for bytes)")


def placeholder_error(name: str, labels, share: float) -> DataError | None:
    """A text column of numbers and at most MAX_PLACEHOLDERS distinct words ("?", "n/a", "-"):
    gaps written as words, which would turn the numbers into labels without a word. None when
    the words are more, or the numbers are few whole ones (labels anyway, e.g. ratings 1-5)."""
    import pandas as pd

    words = pd.Series([str(v) for v in labels], dtype=object)
    x = pd.to_numeric(words, errors="coerce")
    tokens, numbers = sorted(words[x.isna()].tolist()), x.dropna()
    if not 0 < len(tokens) <= MAX_PLACEHOLDERS or len(numbers) == 0:
        return None
    if len(numbers) <= MAX_CATEGORY_INTEGERS and bool((numbers == numbers.round()).all()):
        return None
    flags = " ".join(f"--missing {shlex.quote(t)}" for t in tokens)
    return DataError(f"column {name!r} holds numbers and the text {', '.join(map(repr, tokens))} in {share:.0%} of its "
                     f"cells: gaps written as words? Pass {flags} (fit_table(..., missing={tokens!r})) to read them "
                     f"as gaps, or --column-kind {name}=categorical to model every value as a label")
