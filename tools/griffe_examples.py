"""A Griffe extension for the API reference (mkdocs.yml): read kreg's `Example:`
sections as Griffe's `Examples:` sections, so that their doctests render as code.

kreg's docstrings follow Keras's style (STYLE.md): an `Example:` header, a blank
line, then the doctest at the header's indentation. Griffe's Google parser
expects `Examples:` with the section's lines indented under it.
"""

import re

import griffe

_HEADER = re.compile(r"^Examples?:\s*$")
_NEXT_SECTION = re.compile(r"^[A-Z][A-Za-z ]*:\s*$")


def google_examples(text):
    """`text` with each unindented `Example:` section as an indented `Examples:` one."""
    out, inside = [], False
    for line in text.splitlines():
        if _HEADER.match(line):
            out.append("Examples:")
            inside = True
        elif inside and _NEXT_SECTION.match(line):
            out.append(line)
            inside = False
        elif inside:
            if line.strip() or (out and out[-1] != "Examples:"):
                out.append("    " + line if line.strip() else "")
        else:
            out.append(line)
    return "\n".join(out)


class ExampleSections(griffe.Extension):
    """Rewrite each docstring's `Example:` section as Griffe reads `Examples:`."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = google_examples(obj.docstring.value)
