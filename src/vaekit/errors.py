"""One exception hierarchy for everything a user can get wrong.

The CLI turns any `VaekitError` into one line on stderr and a non-zero exit code;
the Python API raises them as they are. Each message names the problem and the fix.
"""

from __future__ import annotations


class VaekitError(Exception):
    """Base class: a problem with the user's input, files or environment."""

    exit_code = 2


class ConfigError(VaekitError, ValueError):
    """An option or Config field has a value that cannot work."""


class DataError(VaekitError, ValueError):
    """The data cannot be read, or is empty, non-finite or the wrong shape."""


class OutputExistsError(VaekitError, FileExistsError):
    """An output path already holds something we would overwrite."""


class IntegrityError(VaekitError):
    """A saved file is missing, truncated or altered (checksum mismatch)."""


class IncompatibleError(VaekitError, ValueError):
    """The model and the data (or condition) do not fit together."""


class NonFiniteError(VaekitError, FloatingPointError):
    """A loss or gradient became NaN or infinite during training."""

    exit_code = 3
