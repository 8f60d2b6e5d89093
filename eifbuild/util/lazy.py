"""Lazy package faces: a subpackage's ``__init__`` imports what it exports under ``TYPE_CHECKING``
(what type checkers see) and lists it in ``__all__``; at run time each name is imported from its
module on first use.

Start-up time is part of every command's time: ``eifbuild --help`` must not import cryptography
or requests just because a command module names a type from ``eifbuild.eif``. The face's
``TYPE_CHECKING`` imports are the one list of where each name lives: :func:`lazy_exports` reads
them from the ``__init__``'s source on first use (``tests/test_layout.py`` checks ``__all__``
against them).
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable


def type_checking_imports(init_file: str | Path) -> dict[str, str]:
    """``{name: module}`` of the ``from .module import name`` statements under a top-level
    ``if TYPE_CHECKING:`` of ``init_file``."""
    tree = ast.parse(Path(init_file).read_text(encoding="utf-8"))
    found: dict[str, str] = {}
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for stmt in node.body:
                if isinstance(stmt, ast.ImportFrom) and stmt.level == 1 and stmt.module:
                    found.update({alias.asname or alias.name: stmt.module for alias in stmt.names})
    return found


def lazy_exports(package: str, init_file: str) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` (whose ``__init__`` is ``init_file``) that imports
    each name of its ``TYPE_CHECKING`` block from that name's module when first asked for."""
    where: dict[str, str] = {}

    def __getattr__(name: str) -> Any:
        if not where:
            where.update(type_checking_imports(init_file))
        module = where.get(name)
        if module is None:
            msg = f"module {package!r} has no attribute {name!r}"
            raise AttributeError(msg)
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__
