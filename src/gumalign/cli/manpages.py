"""Man pages generated from the CLI's own help, so they never drift: gumalign(1) and gumalign-<command>(1).

Each page has NAME (the command's whole first sentence, never cut), SYNOPSIS, DESCRIPTION, OPTIONS, EXAMPLES (the
"Example usage:" block of the command's module docstring), EXIT STATUS and SEE ALSO. ``scripts/make_man.py`` writes
them to man/ (installed to share/man/man1 by pip); ``gumalign man CMD`` prints one from here, so the installed package
carries every page whatever way it was installed.
"""

from __future__ import annotations

import re
import sys
import textwrap

_MARKUP = re.compile(r"\[/?[a-z ]+\]")

EXIT_STATUS = [
    (".TP", ".B 0", "Success."),
    (".TP", ".B 1", "Aborted at a prompt (gumalign never prompts in normal use)."),
    (".TP", ".B 2", "Bad input or usage: a missing or malformed file, an invalid option value, an unknown option. "
                    "One line starting with \"error:\" on standard error names the file or option and the problem; "
                    "nothing half-written is left behind."),
    (".TP", ".B 130", "Interrupted (Ctrl-C): finished outputs are kept, partial ones removed."),
]


def _click():
    try:  # typer >= 0.29 vendors click
        from typer import _click as click
    except ImportError:  # older typer depends on click
        import click
    return click


def _roff(text: str) -> str:
    """Plain text -> roff-safe text (escape backslashes and leading dots/quotes; drop rich markup)."""
    text = _MARKUP.sub("", text or "").replace("\\", "\\\\").replace("-", "\\-")
    return "\n".join(("\\&" + line) if line.startswith((".", "'")) else line for line in text.splitlines())


def summary(command) -> str:
    """The command's first sentence (or first paragraph, whichever is shorter) on one line, never truncated."""
    help_text = _MARKUP.sub("", command.help or command.short_help or "").strip()
    paragraph = " ".join(help_text.split("\n\n")[0].split())
    match = re.match(r"(.+?\.)(\s|$)", paragraph)
    return match.group(1) if match else paragraph


def examples(command, name: str) -> list[str]:
    """The "Example usage:" lines of the command's module docstring that run this command (all of them when none
    names it, e.g. for the top-level page)."""
    module = sys.modules.get(getattr(getattr(command, "callback", None), "__module__", "") or "")
    doc = (module.__doc__ if module is not None else "") or ""
    if "Example usage:" not in doc:
        return []
    block = doc.split("Example usage:", 1)[1]
    lines = []
    for line in block.splitlines()[1:]:
        if line.strip() and not line.startswith("    "):
            break
        if line.strip():
            lines.append(line.strip())
    own = [line for line in lines if line.startswith(name + " ") or line == name]
    return own or lines


def _option_lines(command) -> list[str]:
    """One .TP entry per option/argument, from click's own help records (names, metavar, help, default)."""
    ctx = _click().Context(command, info_name=command.name)
    lines = []
    for param in command.params:
        record = param.get_help_record(ctx)
        if param.param_type_name == "argument":
            record = (param.name.upper(), getattr(param, "help", "") or "")
        if record is None:
            continue
        names, help_text = record
        lines += [".TP", f".B {_roff(names)}", _roff(help_text)]
    return lines


def _page(name: str, command, summary_line: str, example_lines: list[str]) -> str:
    from gumalign import __version__

    usage_ctx = _click().Context(command, info_name=name)
    usage = " ".join(command.collect_usage_pieces(usage_ctx))
    lines = [
        f'.TH "{name.upper()}" 1 "" "gumalign {__version__}" "gumalign manual"',
        ".SH NAME",
        f"{_roff(name)} \\- {_roff(summary_line)}",
        ".SH SYNOPSIS",
        f".B {_roff(name)}",
        _roff(usage),
        ".SH DESCRIPTION",
        _roff(command.help or ""),
        ".SH OPTIONS",
        *_option_lines(command),
    ]
    if hasattr(command, "commands"):
        lines.append(".SH COMMANDS")
        for sub_name, sub in sorted(command.commands.items()):
            lines += [".TP", f".B {sub_name}", _roff(summary(sub))]
    if example_lines:
        lines.append(".SH EXAMPLES")
        for example in example_lines:
            lines += [".PP", ".nf", _roff(example), ".fi"]
    lines.append(".SH EXIT STATUS")
    for entry in EXIT_STATUS:
        lines += [entry[0], entry[1], _roff(entry[2])]
    see_also = "gumalign(1)" if name != "gumalign" else ", ".join(
        f"gumalign\\-{sub}(1)" for sub in sorted(command.commands)
    )
    lines += [".SH SEE ALSO", see_also, ""]
    return "\n".join(lines)


def pages() -> dict[str, str]:
    """{file name: page text} for the top-level command and every subcommand (nested groups included)."""
    import typer

    from gumalign.cli.main import app

    root = typer.main.get_command(app)
    first_examples = []
    for sub_name, sub in sorted(root.commands.items()):
        own = examples(sub, f"gumalign {sub_name}")
        if hasattr(sub, "commands"):
            own = [line for s in sub.commands.values() for line in examples(s, f"gumalign {sub_name} {s.name}")][:1]
        first_examples += own[:1]
    out = {"gumalign.1": _page("gumalign", root, "subtomogram alignment for cryo-ET", first_examples)}

    def walk(group, prefix: str) -> None:
        for sub_name, sub in sorted(group.commands.items()):
            full = f"{prefix}-{sub_name}"
            name = full.replace("-", " ")
            own = examples(sub, name)
            if hasattr(sub, "commands"):  # a group: its subcommands' examples, once each
                own = list(dict.fromkeys(line for s in sorted(sub.commands) for line in
                                         examples(sub.commands[s], f"{name} {s}")))
            out[f"{full}.1"] = _page(name, sub, summary(sub), own)
            if hasattr(sub, "commands"):
                walk(sub, full)

    walk(root, "gumalign")
    return out


def page_name(words: list[str]) -> str:
    """['models', 'show'] -> 'gumalign-models-show.1'; [] -> 'gumalign.1'."""
    return "-".join(["gumalign", *words]) + ".1"


def render_text(page: str, width: int = 100) -> str:
    """A roff page from :func:`pages` as plain text (the macros these pages use: .TH .SH .TP .B .PP .nf .fi)."""
    out: list[str] = []
    fill, after_tp, in_item = True, False, False
    paragraph: list[str] = []

    def flush() -> None:
        if paragraph:
            indent = " " * (14 if in_item else 7)
            out.extend(textwrap.wrap(" ".join(paragraph), width, initial_indent=indent, subsequent_indent=indent))
            paragraph.clear()

    for raw in page.splitlines():
        line = raw.replace("\\-", "-").replace("\\&", "").replace("\\\\", "\\")
        if raw.startswith(".") and not raw.startswith("\\&"):
            flush()
        if raw.startswith(".TH"):
            continue
        if raw.startswith(".SH "):
            out += ["", line[4:].strip()]
            after_tp = in_item = False
        elif raw.startswith(".TP"):
            after_tp = True
        elif raw.startswith(".B "):
            out.append("       " + line[3:])
            in_item, after_tp = after_tp, False
        elif raw.startswith(".PP"):
            out.append("")
            in_item = False
        elif raw.startswith(".nf"):
            fill = False
        elif raw.startswith(".fi"):
            fill = True
        elif line.strip():
            if fill:
                paragraph.append(line.strip())
            else:
                out.append(" " * (14 if in_item else 7) + line)
    flush()
    return "\n".join(out).strip("\n") + "\n"
