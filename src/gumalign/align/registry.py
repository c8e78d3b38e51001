"""Aligners by name, so `align`, `average --iterations` and `cluster` take any method.

Callers describe the aligner they want with gumalign.align.spec.AlignerSpec (where every default lives) and call its
``build()``; :func:`get_aligner` is the constructor by name underneath it. Imports are lazy: naming a method does not
load torch models or spherical-harmonic tables until it is used.
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
    "local": (
        "gumalign.align.refine", "LocalAligner",
        "local search only, from each particle's current pose (the STAR file's, or the previous iteration's)",
    ),
}


def get_aligner(name: str, refine: bool = False, refine_options: dict | None = None, **options):
    """An aligner instance for ``name`` (a key of METHODS) constructed with exactly ``options``.

    ``refine``: wrap it in gumalign.align.refine.RefiningAligner (the method, then a local search) with
    ``refine_options`` (max_frequency, steps_deg) and the method's device and max_shift. An option the method does not
    take is an error naming it, not silently dropped.
    """
    if name not in METHODS:
        raise GumalignError(f"unknown method {name!r}; choose one of: {', '.join(METHODS)}")
    if refine:
        from gumalign.align.refine import RefiningAligner

        if name == "local":
            raise GumalignError("--refine follows a global method with the local search; --method local is that search")
        extra = {k: v for k, v in (refine_options or {}).items() if v is not None}
        return RefiningAligner(
            get_aligner(name, **options), device=options.get("device", "cpu"), max_shift=options.get("max_shift"),
            **extra,
        )
    module_name, class_name, _ = METHODS[name]
    cls = getattr(importlib.import_module(module_name), class_name)
    try:
        return cls(**options)
    except TypeError as exc:
        if "unexpected keyword argument" in str(exc):
            raise GumalignError(f"--method {name}: {exc}".replace(f"{class_name}.__init__() ", "")) from None
        raise
