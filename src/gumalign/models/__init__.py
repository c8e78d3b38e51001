"""Gum-Net in PyTorch: DCT spectral pooling, Siamese feature extraction and correlation, the spatial transformer with
spectral data imputation, and the correlation loss; plus its ablations (mp, ap, sc) and a compact variant.

Build one with :func:`build_model` ('gumnet', 'gumnet-compact', 'mp', 'ap', 'sc', 'gumnet-tiny'); load trained
weights with :func:`gumalign.weights.load_model`.
"""

from gumalign.models.dct import SpectralPool3d, dct3, dct_matrix, idct3, spectral_pool_matrix
from gumalign.models.gumnet import (
    ARCHITECTURES,
    GumNet,
    GumNetConfig,
    architecture_config,
    build_model,
    parameter_count,
    parameter_counts,
)
from gumalign.models.inputs import zscore
from gumalign.models.layers import feature_correlation, l2_normalise_channels
from gumalign.models.transformer import (
    correlation_loss,
    params_to_rigid,
    rotate_weights,
    spectral_imputation,
    transform_and_impute,
    zyz_matrix,
)

__all__ = [
    "ARCHITECTURES",
    "GumNet",
    "GumNetConfig",
    "SpectralPool3d",
    "architecture_config",
    "build_model",
    "correlation_loss",
    "dct3",
    "dct_matrix",
    "feature_correlation",
    "idct3",
    "l2_normalise_channels",
    "parameter_count",
    "parameter_counts",
    "params_to_rigid",
    "rotate_weights",
    "spectral_imputation",
    "spectral_pool_matrix",
    "transform_and_impute",
    "zscore",
    "zyz_matrix",
]
