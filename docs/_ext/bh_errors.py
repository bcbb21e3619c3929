"""Sphinx directive ``bh-errors``: the app's own error messages, read from its source.

Every ``raise SomeError(message)`` in the package whose exception class is one of
the package's own error classes (any ``class ...Error`` defined in it) or
argparse's ``ArgumentTypeError`` is listed with the module and function that
raises it. f-string fields are shown as ``{name}`` (``{...}`` for an expression). The page therefore cannot
drift from the code: a new message appears on the next build.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from docutils import nodes
from docutils.parsers.rst import Directive, directives


def _text(node) -> str | None:
    """A readable template of a message expression, or None when it is not text."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        out = []
        for part in node.values:
            if isinstance(part, ast.Constant):
                out.append(str(part.value))
            elif isinstance(part.value, (ast.Name, ast.Attribute)):
                out.append("{" + ast.unparse(part.value) + "}")
            else:  # an expression: the reader needs to know a value goes there, not the code
                out.append("{...}")
        return "".join(out)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        if left is None and right is None:
            return None
        return (left if left is not None else "{...}") + (right if right is not None else "{...}")
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "str":
        return "{" + ast.unparse(node) + "}"
    return None


def _error_classes(files: list[Path]) -> set[str]:
    names = {"ArgumentTypeError"}
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ClassDef) and node.name.endswith("Error"):
                names.add(node.name.lstrip("_"))
    return names


def collect_messages(package_dir: Path) -> dict[str, list[tuple[str, str]]]:
    """``{error class: [(message template, "module:function"), ...]}``."""
    package_dir = Path(package_dir)
    files = sorted(p for p in package_dir.rglob("*.py") if "tests" not in p.parts)
    classes = _error_classes(files)
    found: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for path in files:
        tree = ast.parse(path.read_text())
        module = ".".join(path.relative_to(package_dir.parent).with_suffix("").parts)
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(func):
                if not (isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call)):
                    continue
                call = node.exc
                name = (call.func.attr if isinstance(call.func, ast.Attribute)
                        else getattr(call.func, "id", ""))
                if name.lstrip("_") not in classes or not call.args:
                    continue
                text = _text(call.args[0])
                if text and text.strip() and not text.startswith("{str(exc)"):
                    entry = (" ".join(text.split()), f"{module}:{func.name}")
                    if entry not in found[name]:
                        found[name].append(entry)
    return dict(found)


class ErrorsDirective(Directive):
    """``.. bh-errors:: ../bids_harmonize``: one section per error class."""

    required_arguments = 1
    option_spec = {"exclude": directives.unchanged}

    def run(self):
        env = self.state.document.settings.env
        package = (Path(env.srcdir) / self.arguments[0]).resolve()
        env.note_dependency(str(package))
        messages = collect_messages(package)
        out = []
        for name in sorted(messages):
            section = nodes.section(ids=[f"error-{name.lower()}"])
            section += nodes.title(text=name)
            items = nodes.bullet_list()
            for text, where in sorted(messages[name]):
                para = nodes.paragraph()
                para += nodes.literal(text=text)
                para += nodes.Text(" (raised in ")
                para += nodes.literal(text=where)
                para += nodes.Text(")")
                items += nodes.list_item("", para)
            section += items
            out.append(section)
        return out


def setup(app):
    app.add_directive("bh-errors", ErrorsDirective)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "1"}
