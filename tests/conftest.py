import numpy as np
import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


def smooth_blob(shape=(32, 32, 32), seed=0, radius=11.0, sigma=1.5):
    """An asymmetric smooth test density inside a sphere: filtered noise, zero outside ``radius``."""
    from scipy.ndimage import gaussian_filter

    gen = np.random.default_rng(seed)
    vol = gaussian_filter(gen.standard_normal(shape), sigma)
    z, y, x = np.indices(shape) - np.array(shape)[:, None, None, None] // 2
    vol *= (x**2 + y**2 + z**2) <= radius**2
    return vol.astype(np.float32)
