"""A griffe extension: read ppl's docstrings (Google sections with reStructuredText inline
markup) as the Markdown that mkdocstrings renders.

ppl's docstrings are written for ``help()`` and Sphinx habits: ``:class:`X```,
````code````, ``Example:`` headings, ``text::`` literal blocks, and a few ``Raises:`` items
written as prose (``ValueError when ...``). This extension rewrites each docstring's text
when griffe loads it, before mkdocstrings parses the sections, so the source stays as it is
and the documentation build stays free of warnings:

- ``:role:`~a.b.C``` and ``:role:`a.b.C``` become ```C``` / ```a.b.C``` (inline code);
- ````x```` becomes ```x```;
- an ``Example:`` heading becomes ``Examples:`` (griffe's name for the section whose
  ``>>>`` lines it renders as code);
- a trailing ``::`` (reStructuredText literal block) becomes ``:``; the indented block after
  it is already a Markdown code block;
- in a ``Raises:`` section, an item ``Name text`` without a colon becomes ``Name: text``
  and its continuation lines (starting in lower case at the item's indent) are indented.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc|py:\w+):`~?([^`]+)`")
_ROLE_SHORT = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc|py:\w+):`~([^`]+)`")
_DOUBLE = re.compile(r"``([^`]+?)``")
_SECTION = re.compile(r"^(\s*)[A-Z][A-Za-z ]*:\s*$")


def _roles(text: str) -> str:
    text = _ROLE_SHORT.sub(lambda m: f"`{m.group(1).rsplit('.', 1)[-1]}`", text)
    return _ROLE.sub(lambda m: f"`{m.group(1)}`", text)


def _raises(lines: list[str]) -> list[str]:
    out: list[str] = []
    in_raises = False
    item_indent: int | None = None
    for line in lines:
        stripped = line.strip()
        indent = len(line) - len(line.lstrip())
        if _SECTION.match(line) and stripped != "":
            in_raises = stripped == "Raises:"
            item_indent = None
            out.append(line)
            continue
        if in_raises and stripped:
            if item_indent is None:
                item_indent = indent
            if indent == item_indent:
                name, _, rest = stripped.partition(" ")
                if not stripped[0].isupper():  # prose continuing the item above
                    line = f"{line[:indent]}    {stripped}"
                elif not name.endswith(":") and re.fullmatch(r"[A-Za-z_][\w.]*", name):
                    line = f"{line[:indent]}{name}: {rest}"
            elif indent < item_indent:
                in_raises = False
        out.append(line)
    return out


def rewrite(text: str) -> str:
    """The Markdown form of one docstring's text (see the module docstring)."""
    text = _roles(text)
    text = _DOUBLE.sub(lambda m: f"`{m.group(1)}`", text)
    lines = text.split("\n")
    lines = [re.sub(r"^(\s*)Example:\s*$", r"\1Examples:", line) for line in lines]
    lines = [line[:-1] if line.endswith("::") and line.strip() != "::" else line for line in lines]
    return "\n".join(_raises(lines))


class RstDocstrings(griffe.Extension):
    """Rewrite every loaded object's docstring with :func:`rewrite`."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rewrite(obj.docstring.value)
