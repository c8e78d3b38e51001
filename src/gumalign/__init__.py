"""gumalign: subtomogram alignment, averaging, validation and clustering for cryo-ET, built around Gum-Net."""

__version__ = "0.1.0"

from gumalign.errors import GumalignError

__all__ = ["GumalignError", "__version__"]
