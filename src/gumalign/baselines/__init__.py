"""The classical aligners Gum-Net is compared with, behind gumalign.align.base.Aligner.

- :class:`HTAligner`: H-T align (Xu, Beck & Alber 2012), wedge-constrained amplitude matching over SO(3) by FFT, every
  local maximum a candidate, then a constrained translation search per candidate.
- :class:`FAAligner`: F&A align (Chen et al. 2013, PyTom's frm_align), constrained fast rotational matching with
  per-shell bandwidths, refined by alternating translation and complex rotational matching.

Both return RELION matrices A and shifts with particle ≈ transform_volumes(reference, A, shift). The spherical-harmonic
and Wigner-d code they share is in :mod:`gumalign.baselines.sph` and :mod:`gumalign.baselines.so3`.
"""

from gumalign.baselines.fa import FAAligner
from gumalign.baselines.ht import HTAligner

__all__ = ["HTAligner", "FAAligner"]
