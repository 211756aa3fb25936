"""Command-line options from option dataclasses: their attribute docstrings become the help.

Contract: :func:`field_docs` reads the docstring placed under each field of a dataclass (the
litgpt convention) without importing anything heavy; the text is one line, lower-case first
letter, no final full stop, ready for ``help=``.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import textwrap


def field_docs(cls: type) -> dict[str, str]:
    """The attribute docstrings of ``cls`` by field name."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(cls)))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs = {}
    for statement, following in itertools.pairwise(body):
        if (isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
                and isinstance(following, ast.Expr) and isinstance(following.value, ast.Constant)):
            text = " ".join(str(following.value.value).split()).rstrip(".")
            docs[statement.target.id] = text[:1].lower() + text[1:]
    return docs
