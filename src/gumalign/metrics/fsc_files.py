"""FSC output files: a RELION-postprocess-style STAR file and an EMDB FSC XML file (both written atomically).

The STAR file has RELION's two blocks: ``data_general`` (key-value: rlnFinalResolution, ...) and ``data_fsc`` (a loop
over shells: rlnSpectralIndex, rlnResolution in 1/Å, rlnAngstromResolution, then the FSC columns), so scripts that read
RELION's postprocess.star read it too. The XML follows EMDB's FSC schema: ``<fsc title= xaxis="Resolution (A-1)"
yaxis="Correlation Coefficient">`` with one ``<coordinate><x/><y/></coordinate>`` per shell.
"""

from __future__ import annotations

import os
from xml.etree import ElementTree

import numpy as np

from gumalign.io.atomic import write_text_atomic
from gumalign.metrics.fsc import FSCResult


def _format(value) -> str:
    if isinstance(value, (bool, np.bool_)):
        return "1" if value else "0"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return "inf" if not np.isfinite(value) else f"{float(value):.6f}"
    text = str(value)
    return f'"{text}"' if (not text or any(ch.isspace() for ch in text)) else text


def fsc_columns(result: FSCResult) -> dict[str, np.ndarray]:
    """The data_fsc columns in RELION's names, in file order."""
    columns: dict[str, np.ndarray] = {
        "rlnSpectralIndex": result.shells,
        "rlnResolution": result.resolution_inv_angstrom,
        "rlnAngstromResolution": result.resolution_angstrom,
        "rlnFourierShellCorrelationCorrected": result.corrected,
        "rlnFourierShellCorrelationUnmaskedMaps": result.unmasked,
    }
    if result.masked is not None:
        columns["rlnFourierShellCorrelationMaskedMaps"] = result.masked
        columns["rlnCorrectedFourierShellCorrelationPhaseRandomizedMaskedMaps"] = result.phase_randomised
    return columns


def write_postprocess_star(result: FSCResult, path: str | os.PathLike, general: dict[str, object]) -> None:
    """Write ``data_general`` (the ``general`` key-values, e.g. rlnFinalResolution) and ``data_fsc``."""
    lines = ["", "# version 30001 (gumalign)", "", "data_general", ""]
    width = max(len(k) for k in general) + 2 if general else 0
    lines += [f"_{key:<{width}}{_format(value)}" for key, value in general.items()]
    lines += ["", "", "# version 30001 (gumalign)", "", "data_fsc", "", "loop_"]
    columns = fsc_columns(result)
    lines += [f"_{name} #{i + 1}" for i, name in enumerate(columns)]
    for row in range(len(result.shells)):
        lines.append(" ".join(_format(values[row]) for values in columns.values()))
    lines.append("")
    write_text_atomic(path, "\n".join(lines) + "\n")


def write_fsc_xml(result: FSCResult, path: str | os.PathLike, title: str) -> None:
    """Write the corrected FSC curve in EMDB's FSC XML format (x in 1/Å, y the correlation)."""
    root = ElementTree.Element(
        "fsc", {"title": title, "xaxis": "Resolution (A-1)", "yaxis": "Correlation Coefficient"}
    )
    for x, y in zip(result.resolution_inv_angstrom, result.corrected):
        coordinate = ElementTree.SubElement(root, "coordinate")
        ElementTree.SubElement(coordinate, "x").text = f"{float(x):.6f}"
        ElementTree.SubElement(coordinate, "y").text = f"{float(y):.6f}"
    ElementTree.indent(root)
    text = '<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, encoding="unicode")
    write_text_atomic(path, text + "\n")
