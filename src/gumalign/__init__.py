"""gumalign: subtomogram alignment, averaging, validation and clustering for cryo-ET, built around Gum-Net."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gumalign")  # pyproject.toml is the one place the version is written
except PackageNotFoundError:  # run from a source tree that was never installed
    __version__ = "0.0.0+unknown"

from gumalign.errors import GumalignError

__all__ = ["GumalignError", "__version__"]
