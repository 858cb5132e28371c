"""Escaping of free text (row names, claims, provenance) for LaTeX and Markdown."""
from __future__ import annotations

import re

# One pass over the string, so replacements are never escaped twice. Comparison signs become
# math: in LaTeX's default OT1 text font "<" prints as an inverted exclamation mark.
_TEX = {
    "\\": r"\textbackslash{}",
    "&": r"\&",
    "%": r"\%",
    "$": r"\$",
    "#": r"\#",
    "_": r"\_",
    "{": r"\{",
    "}": r"\}",
    "~": r"\textasciitilde{}",
    "^": r"\textasciicircum{}",
    "<=": r"$\le$",
    ">=": r"$\ge$",
    "<": r"$<$",
    ">": r"$>$",
    "|": r"$|$",
}
_TEX_RE = re.compile("|".join(re.escape(k) for k in sorted(_TEX, key=len, reverse=True)))

# Characters that Markdown (GitHub flavour) would read as emphasis, code, links or table bars.
_MD_RE = re.compile(r"([\\`*_\[\]|])")


def tex_escape(text: str) -> str:
    """Plain text -> LaTeX text-mode source that prints the same characters."""
    return _TEX_RE.sub(lambda m: _TEX[m.group(0)], str(text))


def md_escape(text: str) -> str:
    """Plain text -> Markdown that prints the same characters (also inside table cells)."""
    return _MD_RE.sub(r"\\\1", str(text))
