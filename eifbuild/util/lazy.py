"""Lazy package faces: a subpackage's ``__init__`` names what it exports and from which module,
and each module is imported on first use of one of its names.

Start-up time is part of every command's time: ``eifbuild --help`` must not import cryptography
or requests just because a command module names a type from ``eifbuild.eif``. A face lists its
names twice on purpose: once under ``TYPE_CHECKING`` for type checkers and once here for the
import system; ``tests/test_layout.py`` checks that the two lists agree.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


def lazy_exports(package: str, exports: Mapping[str, tuple[str, ...]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that imports ``exports``' names from their modules
    (``{"reader": ("EifImage", "read_eif")}``) when first asked for."""
    where = {name: module for module, names in exports.items() for name in names}

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            msg = f"module {package!r} has no attribute {name!r}"
            raise AttributeError(msg)
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    return __getattr__
