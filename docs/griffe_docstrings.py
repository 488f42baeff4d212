"""Griffe extension used by the documentation build (``mkdocs.yml``): docstrings read as numpy style.

The package's docstrings use numpy sections, with two liberties that griffe's numpy parser
does not read:

- a parameter (or attribute) entry written ``name: description`` on one line, where numpy
  style has ``name : type`` and the description indented below (griffe would take the
  description's first line for a type and drop it);
- a paragraph after a ``Parameters`` section (griffe would read each of its lines as a
  parameter);

and Sphinx roles (``:class:`~a.B```), which Markdown shows verbatim.  This extension rewrites
each docstring before it is parsed: the entry's text moves to an indented description line, a
paragraph after a section gets a ``Notes`` heading, and a role becomes a code span.  Entries
already in numpy form (``name : type`` or ``name: int``) are left as they are.  Nothing in the
package is changed; a docstring it cannot read is left untouched.
"""

from __future__ import annotations

import re
import typing as tp

import griffe

#: Sections whose entries are ``name`` lines followed by indented descriptions.
ENTRY_SECTIONS = {"Parameters", "Other Parameters", "Attributes"}
#: An entry line: one name or several separated by commas, then optionally ``: text``.
ENTRY = re.compile(r"^(?P<names>\*{0,2}\w+(?:, \*{0,2}\w+)*)(?:\s?:\s*(?P<rest>.*))?$")
#: What may follow an entry's colon and be a type rather than a description.
TYPE = re.compile(r"^[\w.\[\]|]+(?:(?:, | or | \| )[\w.\[\]|]+)*(?:, optional)?$")
#: Sphinx cross-reference roles, e.g. :class:`~nevergrad_zonp.oracle.OutputOracle`.
ROLE = re.compile(r":(?:py:)?(?:class|func|meth|mod|attr|data|exc|obj|const):`(?P<tilde>~?)(?P<target>[^`]+)`")


def _role_to_code(match: re.Match[str]) -> str:
    target = match.group("target")
    return f"``{target.rsplit('.', 1)[-1] if match.group('tilde') else target}``"


def _is_heading(lines: list[str], index: int) -> bool:
    """Whether ``lines[index]`` is a section title underlined by dashes on the next line."""
    if index + 1 >= len(lines) or not lines[index].strip():
        return False
    underline = lines[index + 1].strip()
    return len(underline) >= 3 and set(underline) == {"-"}


def numpy_compatible(text: str) -> str:
    """``text`` (a cleaned docstring) rewritten so that griffe's numpy parser reads all of it."""
    text = ROLE.sub(_role_to_code, text)
    lines = text.split("\n")
    out: list[str] = []
    section = None
    previous_blank = False
    index = 0
    while index < len(lines):
        line = lines[index]
        if _is_heading(lines, index):
            section = line.strip()
            out += [line, lines[index + 1]]
            index += 2
            previous_blank = False
            continue
        if section in ENTRY_SECTIONS and line and not line[0].isspace():
            match = ENTRY.match(line)
            rest = match.group("rest") if match else None
            if match is None:
                # a paragraph after the entries: it is no entry, so it ends the section
                out += ([] if previous_blank else [""]) + ["Notes", "-----", line]
                section = "Notes"
            elif rest and not TYPE.match(rest):
                out += [match.group("names"), "    " + rest]
            else:
                out.append(line)
        else:
            out.append(line)
        previous_blank = not line.strip()
        index += 1
    return "\n".join(out)


class NumpyCompatibleDocstrings(griffe.Extension):
    """Rewrites every docstring with :func:`numpy_compatible` once the object tree is built."""

    def on_object(self, *, obj: griffe.Object, **kwargs: tp.Any) -> None:
        docstring = obj.docstring
        if docstring is None:
            return
        try:
            docstring.value = numpy_compatible(docstring.value)
        except Exception:  # a docstring this cannot read stays as it is
            pass
