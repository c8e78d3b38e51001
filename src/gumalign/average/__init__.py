"""Wedge-compensated averaging with gold-standard half maps, and iterative reference-free averaging.

Particles are streamed from a ParticleStack (ArrayStack for arrays in memory, StarStack for a RELION STAR file);
see :mod:`gumalign.average.compensated` for the estimator and its regularisation.
"""

from gumalign.average.compensated import AverageResult, assign_halves, average_particles
from gumalign.average.iterative import IterationResult, iterative_average, realign
from gumalign.average.stack import ArrayStack, ParticleStack, StarStack, SubsetStack, iter_batches, load_all

__all__ = [
    "ArrayStack",
    "AverageResult",
    "IterationResult",
    "ParticleStack",
    "StarStack",
    "SubsetStack",
    "assign_halves",
    "average_particles",
    "iter_batches",
    "iterative_average",
    "load_all",
    "realign",
]
