"""Simulated subtomograms with ground truth, as in the Gum-Net paper (supplement S3.2.1).

Structures in (``load_structure``: atomic model, density map or built-in template), the imaging model
(``simulate_subtomograms``, ``simulate_pairs``: rotate and shift, tilt-series projection, CTF and MTF, noise to an
SNR, weighted back-projection), and the data-set writer behind ``gumalign simulate`` (``write_dataset``).
Conventions: volumes float32 [z, y, x]; rotations are RELION's A acting on (x, y, z); shifts are (x, y, z) voxels;
particle = transform_volumes(template, A, shift).
"""

from gumalign.simulate.dataset import SimulationPlan, write_dataset
from gumalign.simulate.density import Structure, density_from_map, density_from_model, read_atomic_model
from gumalign.simulate.imaging import (
    ImagingParams,
    SimulatedPairs,
    random_poses,
    relative_transform,
    simulate_pairs,
    simulate_subtomograms,
)
from gumalign.simulate.structures import load_structure
from gumalign.simulate.templates import list_builtin_templates, load_builtin_template

__all__ = [
    "ImagingParams",
    "SimulatedPairs",
    "SimulationPlan",
    "Structure",
    "density_from_map",
    "density_from_model",
    "list_builtin_templates",
    "load_builtin_template",
    "load_structure",
    "random_poses",
    "read_atomic_model",
    "relative_transform",
    "simulate_pairs",
    "simulate_subtomograms",
    "write_dataset",
]
