"""mfa: urban material stocks and flows from building registers and footprints."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("mfa")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0+unknown"

__all__ = ["__version__"]
