"""Any sampling for Gum-Net (issue 17): particles of another box and voxel size brought to the model's sampling by
Fourier resizing and a centred crop or pad, pinned against densities sampled directly at the target sampling, and
the aligner's answers mapped back to the particles' pixels."""

import numpy as np
import pytest
import torch

from gumalign.fourier import wedge_mask
from gumalign.fourier.resample import Resampling, fit_box, fourier_resize, resample_centred


def gaussian(box: int, voxel: float, sigma_angst: float, centre_angst=(0.0, 0.0, 0.0)) -> np.ndarray:
    """An isotropic Gaussian sampled directly: voxel centres at (i - box//2)·voxel Å, [z, y, x]."""
    axis = (np.arange(box) - box // 2) * voxel
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    cx, cy, cz = centre_angst
    r2 = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2
    return np.exp(-r2 / (2 * sigma_angst**2)).astype(np.float32)


@pytest.mark.parametrize("box, voxel, model_voxel", [(48, 7.0, 12.0), (64, 14.0, 9.0), (16, 14.0, 9.0)])
def test_resampled_volume_equals_the_density_sampled_at_the_models_sampling(box, voxel, model_voxel):
    """Down (48³ at 7 Å -> 28³ at 12 Å, padded to 32³) and up (64³ at 14 Å -> 100³ at 8.96 Å, cropped to 32³;
    16³ -> 24³ at 9.33 Å, padded): the result is the same Gaussian sampled directly at the working voxel size."""
    plan = Resampling(box, voxel, 32, model_voxel)
    assert plan.resized_box % 2 == 0
    assert abs(plan.working_voxel_size - model_voxel) <= model_voxel / plan.resized_box * 1.01
    centre = (9.0, -14.0, 5.0)
    data = gaussian(box, voxel, 30.0, centre)
    out = plan.volumes(torch.from_numpy(data)[None])[0].numpy()
    expected = gaussian(32, plan.working_voxel_size, 30.0, centre)
    inside = min(plan.resized_box, 32) // 2 - 2  # where both boxes hold the density (padding is the mean)
    sl = slice(16 - inside, 16 + inside)
    np.testing.assert_allclose(out[sl, sl, sl], expected[sl, sl, sl], atol=2e-3)


def test_fourier_resize_keeps_the_centre_and_the_mean():
    vol = gaussian(32, 1.0, 3.0)
    for size in (20, 48):
        resized = fourier_resize(torch.from_numpy(vol)[None], size)[0].numpy()
        assert np.unravel_index(np.argmax(resized), resized.shape) == (size // 2,) * 3
        assert resized.mean() == pytest.approx(vol.mean(), rel=1e-4)


def test_fit_box_crops_and_pads_about_the_centre():
    vol = torch.arange(6**3, dtype=torch.float32).reshape(1, 6, 6, 6)
    cropped = fit_box(vol, 4)
    assert cropped[0, 2, 2, 2] == vol[0, 3, 3, 3]
    padded = fit_box(vol, 10)
    assert padded[0, 5, 5, 5] == vol[0, 3, 3, 3] and padded[0, 0, 0, 0] == vol.mean()


def test_weights_follow_their_frequencies_in_cycles_per_angstrom():
    """A 30° wedge cube at 48³ resampled to the model's 32³ (after 48 -> 28) is the same wedge made at 32³, apart
    from voxels on its edge, and zero beyond the particles' own Nyquist."""
    plan = Resampling(48, 7.0, 32, 12.0)
    weights = torch.from_numpy(wedge_mask((48,) * 3, (-60, 60), "centred"))[None]
    out = plan.weights(weights)[0].numpy()
    direct = wedge_mask((32,) * 3, (-60, 60), "centred")
    k = np.arange(32) - 16
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    radius = np.sqrt(kx**2 + ky**2 + kz**2)
    # In the resized box the particles' frequencies end at 28/2 = 14 model indices (scaled by 28/32 from 16).
    observed = radius < 12
    agree = np.isclose(out[observed], direct[observed], atol=0.5).mean()
    assert agree > 0.95, agree
    # A full-observation cube stays one inside the particles' band.
    ones = resample_centred(torch.ones(1, 48, 48, 48), 32, 28 / 32, 48)[0].numpy()
    assert np.allclose(ones[observed], 1.0)
    # Up-sampled particles (16³ at 14 Å -> 24³ at 9.33 Å, padded to 32³) hold nothing beyond their own Nyquist,
    # 8 source indices = 8·32/24 = 10.7 model indices: weight 0 there, 1 within (between, the edge interpolates).
    up = Resampling(16, 14.0, 32, 9.0)
    assert up.resized_box == 24
    ones = up.weights(torch.ones(1, 16, 16, 16))[0].numpy()
    cube = np.maximum(np.maximum(np.abs(kx), np.abs(ky)), np.abs(kz))
    assert np.all(ones[cube >= 11] == 0) and np.allclose(ones[cube <= 9], 1.0)  # 9·0.75 < 7, the last index


def test_gumnet_aligns_particles_of_another_box_and_voxel_size_as_at_its_own():
    """The shipped model on 48³ particles at 7 Å (resampled) finds the rotations it finds on the same objects at its
    own 32³ and 9 Å, and the shifts come back in the particles' pixels."""
    from scipy.spatial.transform import Rotation

    from gumalign.align.gumnet import GumNetAligner
    from gumalign.geometry import rotation_error, transform_volumes
    from gumalign.simulate.templates import load_builtin_template

    template = load_builtin_template("spliceosome")  # 32³ at 12 Å, asymmetric
    rotations = Rotation.random(4, random_state=3).as_matrix()
    shifts_angst = np.array([[9.0, -18.0, 4.5], [0.0, 13.5, -9.0], [-22.5, 4.5, 9.0], [4.5, 0.0, 0.0]])
    model_voxel = 9.0
    results = {}
    # The same 288 Å field of view at the model's sampling (32³, 9 Å) and at 48³, 6 Å.
    for box, voxel in ((32, model_voxel), (48, 6.0)):
        plan = Resampling(32, template.voxel_size, box, voxel)
        ref = plan.volumes(torch.from_numpy(template.density)[None])[0]
        voxel = plan.working_voxel_size
        parts = transform_volumes(ref, rotations, shifts_angst / voxel).numpy()
        ones = np.ones((1, box, box, box), np.float32)
        aligner = GumNetAligner(device="cpu", batch_size=4, voxel_size=voxel)
        assert (aligner.resampling(box) is None) == (box == 32)
        result = aligner.align(ref.numpy()[None], ones, parts, ones)
        results[box] = (rotation_error(rotations, result.rotations), result.shifts * voxel)
    own, resampled = results[32], results[48]
    assert abs(resampled[0].mean() - own[0].mean()) < 0.1, (own[0], resampled[0])
    good = (resampled[0] < 0.2) & (own[0] < 0.2)
    assert good.sum() >= 2, (own[0], resampled[0])
    np.testing.assert_allclose(resampled[1][good], shifts_angst[good], atol=6.0)  # within 1 voxel at 6 Å


def test_gumnet_refuses_another_box_without_a_pixel_size():
    from gumalign.align.gumnet import GumNetAligner
    from gumalign.errors import GumalignError

    aligner = GumNetAligner(device="cpu")
    with pytest.raises(GumalignError, match="pixel size"):
        aligner.align(np.zeros((1, 48, 48, 48), np.float32), np.ones((1, 48, 48, 48), np.float32),
                      np.zeros((1, 48, 48, 48), np.float32), np.ones((1, 48, 48, 48), np.float32))
