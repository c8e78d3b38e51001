"""Real 3D CTF weights (rlnCtfImage): RELION's three layouts read as one centred cube, and averaging as RELION does it,
Σ CTF·P / (Σ CTF² + λ), or Σ P / (Σ CTF² + λ) for CTF-premultiplied data (src/ml_optimiser.cpp, get3DCTFAndMulti)."""

import numpy as np
import pytest

from gumalign.average.compensated import average_particles
from gumalign.average.stack import ArrayStack, StarStack
from gumalign.errors import GumalignError
from gumalign.io.ctf import ctf_from_array, mirror_centred
from gumalign.io.mrc import write_volume
from gumalign.io.star import read_star
from gumalign.metrics import pearson
from tests.conftest import smooth_blob

N = 16


def centred_radius(n=N):
    k = np.fft.fftshift(np.fft.fftfreq(n) * n)
    kz, ky, kx = np.meshgrid(k, k, k, indexing="ij")
    return np.sqrt(kz**2 + ky**2 + kx**2)


def ctf_cube(defocus):
    """An even (k -> -k symmetric) signed CTF-like function on the centred grid, zero beyond N/2."""
    r = centred_radius()
    return (np.sin(defocus * r**2 / N + 0.3) * (r <= N // 2)).astype(np.float32)


def apply_centred(volume, weight):
    return np.fft.ifftn(np.fft.fftn(volume) * np.fft.ifftshift(weight)).real.astype(np.float32)


def test_the_three_layouts_give_the_same_centred_ctf():
    ctf = ctf_cube(2.0)
    rfft_half = np.fft.ifftshift(ctf)[..., : N // 2 + 1]  # FFTW half: kx >= 0, ky/kz in FFT order
    cube = ctf_from_array(ctf, N)
    half = ctf_from_array(rfft_half, N)
    both = ctf_from_array(np.concatenate([rfft_half**2, np.ones_like(rfft_half)]), N)
    np.testing.assert_allclose(cube.values, ctf, atol=1e-6)
    np.testing.assert_allclose(half.values, ctf, atol=1e-6)
    np.testing.assert_allclose(both.values, ctf**2, atol=1e-6)
    assert (cube.layout, half.layout, both.layout) == ("cube", "half", "half+multiplicity")
    with pytest.raises(GumalignError, match="fits none of RELION's layouts"):
        ctf_from_array(np.ones((N, N, N + 1)), N)


def test_cube_is_read_at_minus_k_as_relion_reads_it():
    # RELION: Fctf(k) = Ictf(-k) about the cube's origin N//2 (get3DCTFAndMulti); an asymmetric cube shows it.
    cube = np.zeros((N, N, N), np.float32)
    c = N // 2
    cube[c + 1, c - 2, c + 3] = 1.0  # at (kz, ky, kx) = (1, -2, 3) in the file
    values = ctf_from_array(cube, N).values
    assert values[c - 1, c + 2, c - 3] == 1.0 and values.sum() == 1.0  # gumalign holds it at k = (-1, 2, -3)
    np.testing.assert_array_equal(mirror_centred(mirror_centred(cube)), cube)


def test_multiplicity_below_relions_threshold_is_unobserved():
    rfft_half = np.ones((N, N, N // 2 + 1), np.float32)
    multiplicity = np.ones_like(rfft_half)
    multiplicity[2, 3, 4] = 0.005  # below --subtomo_multi_thr 0.01
    ctf = ctf_from_array(np.concatenate([rfft_half, multiplicity]), N)
    c = N // 2
    assert ctf.observed[c + 2, c + 3, c + 4] == 0 and ctf.observed[c - 2, c - 3, c - 4] == 0  # and its mirror
    assert ctf.values[c + 2, c + 3, c + 4] == 0 and ctf.observed.sum() == N**3 - 2


def _particles(template, defoci, premultiplied):
    ctfs = [ctf_cube(d) for d in defoci]
    particles = np.stack([apply_centred(template, w * w if premultiplied else w) for w in ctfs])
    return particles, np.stack(ctfs)


def test_average_divides_by_the_summed_ctf_squared():
    template = smooth_blob((N,) * 3, seed=2, radius=5.0).astype(np.float32)
    defoci = [1.0, 2.2, 3.7, 5.1]
    particles, ctfs = _particles(template, defoci, premultiplied=False)
    eye, zero = np.tile(np.eye(3), (4, 1, 1)), np.zeros((4, 3))
    relion = average_particles(ArrayStack(particles, ctf=(ctfs, ctfs**2)), eye, zero, halves=np.array([1, 2] * 2),
                               regularisation=1e-6)
    # The expected map, by the formula: Σ CTF·P / Σ CTF² wherever some particle saw k (here: everywhere in N/2).
    spectra = np.stack([np.fft.fftshift(np.fft.fftn(p)) for p in particles])
    expected_spectrum = (ctfs * spectra).sum(0) / np.maximum((ctfs**2).sum(0) + 1e-6 * 4, 1e-12)
    expected = np.fft.ifftn(np.fft.ifftshift(expected_spectrum)).real
    assert pearson(relion.full, expected) > 0.999
    inside = centred_radius() <= N // 2
    assert pearson(relion.full, apply_centred(template, inside.astype(np.float32))) > 0.99
    # The old reading (|CTF| as a 0..1 weight, c = d = |CTF|) does not undo the sign flips.
    old = average_particles(ArrayStack(particles, np.abs(ctfs)), eye, zero, halves=np.array([1, 2] * 2),
                            regularisation=1e-6)
    assert pearson(old.full, template) < pearson(relion.full, template) - 0.05


STAR = """data_optics

loop_
_rlnOpticsGroup #1
_rlnOpticsGroupName #2
_rlnImagePixelSize #3
_rlnImageSize #4
_rlnImageDimensionality #5
_rlnCtfDataAreCtfPremultiplied #6
1 opticsGroup1 8.0 {n} 3 {pre}

data_particles

loop_
_rlnImageName #1
_rlnCtfImage #2
_rlnAngleRot #3
_rlnAngleTilt #4
_rlnAnglePsi #5
_rlnRandomSubset #6
_rlnOpticsGroup #7
{rows}
"""


@pytest.mark.parametrize("premultiplied", [False, True])
def test_star_particles_with_half_transform_ctfs_average_back_to_the_template(tmp_path, premultiplied):
    template = smooth_blob((N,) * 3, seed=5, radius=5.0).astype(np.float32)
    defoci = [1.0, 2.2, 3.7, 5.1]
    particles, ctfs = _particles(template, defoci, premultiplied)
    rows = []
    for i, (p, w) in enumerate(zip(particles, ctfs)):
        write_volume(tmp_path / f"p{i}.mrc", p, 8.0)
        stored = w * w if premultiplied else w  # RELION 4/5 premultiplied data come with CTF² weights
        write_volume(tmp_path / f"p{i}_ctf.mrc", np.fft.ifftshift(stored)[..., : N // 2 + 1].copy(), 8.0)
        rows.append(f"p{i}.mrc p{i}_ctf.mrc 0 0 0 {i % 2 + 1} 1")
    star = tmp_path / "parts.star"
    star.write_text(STAR.format(n=N, pre=int(premultiplied), rows="\n".join(rows)))
    table = read_star(star)
    assert table.ctf_premultiplied().tolist() == [premultiplied] * 4
    stack = StarStack(table)
    result = average_particles(stack, table.matrices(), table.origins_px(), halves=table.half_sets(),
                               regularisation=1e-6)
    inside = (centred_radius() <= N // 2).astype(np.float32)
    assert pearson(result.full, apply_centred(template, inside)) > 0.99
    # Scoring sees |CTF| scaled to 1 (the square root of CTF² for premultiplied data).
    _, scoring = stack.load(np.array([0]))
    np.testing.assert_allclose(scoring[0], np.abs(ctfs[0]) / np.abs(ctfs[0]).max(), atol=1e-5)
