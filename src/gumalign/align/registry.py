"""Aligners by name, so `align`, `average --iterations` and `cluster` take any method.

Imports are lazy: naming a method does not load torch models or spherical-harmonic tables until it is used.
"""

from __future__ import annotations

import importlib

from gumalign.errors import GumalignError

# name -> (module, class, one-line description)
METHODS: dict[str, tuple[str, str, str]] = {
    "gumnet": (
        "gumalign.align.gumnet", "GumNetAligner",
        "Gum-Net: the shipped model from 60 starts, or a one-pass full-SO(3) model (--model; top-k hypotheses)",
    ),
    "ht": ("gumalign.baselines.ht", "HTAligner", "H-T align (Xu, Beck & Alber 2012): fast rotational matching"),
    "fa": ("gumalign.baselines.fa", "FAAligner", "F&A align (Chen et al. 2013): FRM with alternating refinement"),
}


def get_aligner(name: str, refine: bool = False, **options):
    """An aligner instance for ``name`` ('gumnet', 'ht', 'fa') built with ``options``.

    Options a method does not take are dropped, so callers can pass the common set (device, max_shift, ...).
    ``refine``: wrap it in gumalign.align.refine.RefiningAligner (the method, then a local search); the option
    ``max_frequency`` goes to the refinement only.
    """
    if refine:
        from gumalign.align.refine import RefiningAligner

        max_frequency = options.pop("max_frequency", None)
        return RefiningAligner(
            get_aligner(name, **options), device=options.get("device", "cpu"), max_shift=options.get("max_shift"),
            max_frequency=max_frequency,
        )
    if name not in METHODS:
        raise GumalignError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    module_name, class_name, _ = METHODS[name]
    cls = getattr(importlib.import_module(module_name), class_name)
    import inspect

    accepted = inspect.signature(cls).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values()):
        options = {k: v for k, v in options.items() if k in accepted}
    return cls(**options)
