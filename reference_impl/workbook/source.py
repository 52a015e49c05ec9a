"""Ours beside theirs: a function's source from reference_impl next to the installed transformers' source.

Every lesson shows our implementation beside the real library's with `beside(ours, theirs)`, never a pasted
copy and never a slice of source text by string index. In JupyterLab the two listings sit in two
syntax-highlighted columns; the plain-text form (what nbval compares, and what a terminal shows) is the two
listings one after the other, each headed by where it lives.
"""

from __future__ import annotations

import ast
import html
import inspect
import textwrap
from dataclasses import dataclass
from typing import Any

__all__ = ["Beside", "beside", "source_of"]


def _where(obj: Any) -> str:
    module = getattr(obj, "__module__", None) or type(obj).__module__
    name = getattr(obj, "__qualname__", None) or type(obj).__qualname__
    return f"{module}.{name}"


def source_of(obj: Any, *, docstring: bool = False) -> str:
    """The dedented source of a function, method or class, without its docstring unless `docstring=True`.

    Raises:
        TypeError: `obj` has no Python source (a builtin, or an object defined in a notebook cell).
    """
    try:
        source = textwrap.dedent(inspect.getsource(obj))
    except (OSError, TypeError) as error:
        raise TypeError(f"obj={_where(obj)} has no Python source to show ({error})") from None
    if docstring:
        return source.rstrip() + "\n"
    node = ast.parse(source).body[0]
    body = getattr(node, "body", [])
    if not (
        body
        and isinstance(body[0], ast.Expr)
        and isinstance(body[0].value, ast.Constant)
        and isinstance(body[0].value.value, str)
    ):
        return source.rstrip() + "\n"
    lines = source.splitlines()
    first, last = body[0].lineno - 1, body[0].end_lineno or body[0].lineno  # 0-based start, exclusive end
    return "\n".join(lines[:first] + lines[last:]).rstrip() + "\n"


@dataclass(frozen=True)
class Beside:
    """Two listings to show side by side (HTML in JupyterLab, one after the other as text)."""

    ours: str
    theirs: str
    ours_title: str
    theirs_title: str

    def __repr__(self) -> str:
        rule = "-" * 100
        return (
            f"ours: {self.ours_title}\n{rule}\n{self.ours}{rule}\n"
            f"theirs: {self.theirs_title}\n{rule}\n{self.theirs}{rule}"
        )

    def _repr_html_(self) -> str:
        def column(title: str, code: str) -> str:
            try:
                from pygments import highlight
                from pygments.formatters import HtmlFormatter
                from pygments.lexers import PythonLexer

                body = highlight(code, PythonLexer(), HtmlFormatter(noclasses=True, nowrap=False))
            except ImportError:  # pragma: no cover - pygments comes with IPython
                body = f"<pre>{html.escape(code)}</pre>"
            head = f"<div style='font-weight:bold;font-family:monospace'>{html.escape(title)}</div>"
            return f"<td style='vertical-align:top;text-align:left;width:50%'>{head}{body}</td>"

        return (
            "<table style='width:100%;font-size:85%'><tr>"
            f"{column('ours: ' + self.ours_title, self.ours)}"
            f"{column('theirs: ' + self.theirs_title, self.theirs)}"
            "</tr></table>"
        )


def beside(ours: Any, theirs: Any, *, docstring: bool = False) -> Beside:
    """Our implementation next to transformers', e.g. `beside(reference_impl.Conv1D.forward, Conv1D.forward)`.

    Args:
        ours: a function, method or class of reference_impl.
        theirs: the same thing from the installed transformers (or torch).
        docstring: keep the docstrings (default: bodies only, so the code is what is compared).

    Returns:
        A `Beside`, which a notebook cell displays as two highlighted columns.
    """
    return Beside(
        source_of(ours, docstring=docstring),
        source_of(theirs, docstring=docstring),
        _where(ours),
        _where(theirs),
    )
