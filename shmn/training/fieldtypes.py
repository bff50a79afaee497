"""The types of a dataclass's fields, read in a way Python 3.9 accepts (Slicer 5.6-5.8 run 3.9.10).

With ``from __future__ import annotations`` a field written ``epochs: int | None`` keeps the string
"int | None"; ``typing.get_type_hints`` evaluates it as written, and ``int | None`` only evaluates on
Python 3.10 and later. Here each ``A | B`` is rewritten as ``typing.Union[A, B]`` before evaluation,
so the same hints come out on every supported Python. Standard library only: no torch, no numpy.
"""

from __future__ import annotations

import ast
import sys
import typing


class _UnionAsTyping(ast.NodeTransformer):
    """Rewrites ``A | B`` in an annotation into ``typing.Union[A, B]``."""

    def visit_BinOp(self, node):
        node = self.generic_visit(node)
        if not isinstance(node.op, ast.BitOr):
            return node
        union = ast.Attribute(value=ast.Name(id="__typing__", ctx=ast.Load()), attr="Union", ctx=ast.Load())
        return ast.Subscript(value=union, slice=ast.Tuple(elts=[node.left, node.right], ctx=ast.Load()), ctx=ast.Load())


def evaluate_annotation(annotation, namespace: typing.Mapping):
    """The type an annotation string names, looked up in ``namespace`` (a module's globals)."""
    if not isinstance(annotation, str):
        return annotation
    expression = _UnionAsTyping().visit(ast.parse(annotation.strip(), mode="eval").body)
    code = compile(ast.fix_missing_locations(ast.Expression(body=expression)), "<annotation>", "eval")
    # Our own source's annotations, not user input. Locals may be any mapping (tests resolve names lazily).
    return eval(code, {"__builtins__": __builtins__, "__typing__": typing}, namespace)  # noqa: S307


def field_types(cls) -> dict:
    """Each annotated attribute's type of ``cls``, base classes first (what get_type_hints gives on 3.10+)."""
    hints: dict = {}
    for klass in reversed(cls.__mro__):
        module = sys.modules.get(klass.__module__)
        namespace = dict(vars(module)) if module is not None else {}
        for name, annotation in vars(klass).get("__annotations__", {}).items():
            hints[name] = evaluate_annotation(annotation, namespace)
    return hints
