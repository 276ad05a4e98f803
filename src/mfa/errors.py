"""The error hierarchy of mfa.

Every error says what is wrong, where (file, key, row or feature) and how to fix it. Each
class also inherits the matching built-in so callers can catch either.
"""

from __future__ import annotations


class MfaError(Exception):
    """Root of all errors raised on purpose by mfa."""


class ConfigError(MfaError, ValueError):
    """A pipeline file or a config table is invalid."""


class InputDataError(MfaError, ValueError):
    """An input data file (register, footprints, districts, raster) is unusable."""


class InputNotFoundError(InputDataError, FileNotFoundError):
    """An input file named in a pipeline does not exist."""


class ValidationError(MfaError, AssertionError):
    """An output layer failed a check before publishing (schema, CRS, mass balance)."""


class PublishError(MfaError, OSError):
    """A run could not be published (the previous `latest` is left untouched)."""


class OutputStorageError(MfaError, OSError):
    """A write failed because the file system is full, over quota or read-only
    (:func:`mfa.io.storage.storage_error`); ``errno`` is ENOSPC, EDQUOT or EROFS."""


class OutputWriteError(MfaError, RuntimeError):
    """An output file of a run could not be written for another reason than the disk (a
    writer process failed or was killed); nothing was published."""


class TransientFetchError(MfaError, ConnectionError):
    """A download failed in a way that may pass (busy server, timeout, cut-off response)."""


class PullError(MfaError, ConnectionError):
    """A pull failed for good (after its bounded retries, or at once when retrying cannot
    help); nothing was published and the previous snapshot stays the newest."""


class SnapshotCheckError(InputDataError):
    """A pulled snapshot failed its checks (fields, ids, CRS, row count); not published."""
