"""The Gum-Net architectures by name, in words: one table for `gumalign train --help`, `gumalign models` and the
model builder (gumalign.models.gumnet.ARCHITECTURES holds their configurations). No torch here: --help stays instant.
"""

ARCH_HELP = {
    "gumnet": "Gum-Net as published (about 110 M parameters, 440 MB)",
    "gumnet-compact": "same principles, half-width features and a narrow head (shipped; CPU-trainable)",
    "gumnet-compact-local": "gumnet-compact with rotation-vector outputs within 60° (shipped; run from 60 starts)",
    "mp": "ablation: max pooling instead of spectral pooling",
    "ap": "ablation: average pooling instead of spectral pooling",
    "sc": "ablation: single correlation map c_ab",
    "gumnet-tiny": "a toy size for tests and smoke runs",
    "gumnet-so3": "one pass over all of SO(3): 60 icosahedral anchors, a score and a 6D residual each (compact widths)",
    "gumnet-so3-mh": "one pass over all of SO(3): 4 free 6D rotation hypotheses with confidences (compact widths)",
    "gumnet-so3-small": "gumnet-so3 at half the compact widths (CPU-budget comparisons)",
    "gumnet-so3-mh-small": "gumnet-so3-mh at half the compact widths (CPU-budget comparisons)",
    "gumnet-so3-tiny": "a toy gumnet-so3 for tests",
}


def arch_help_text() -> str:
    """'name (description); ...' for an option's help."""
    return "; ".join(f"{name}: {text}" for name, text in ARCH_HELP.items())
