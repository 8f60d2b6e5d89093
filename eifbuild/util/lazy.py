"""Lazy package faces: each name a package exports is imported from its module on first use.

Start-up time is part of every command's time: ``eifbuild --help`` must not import cryptography
or requests just because a command module names a type from ``eifbuild.eif``. A face's
``__init__`` imports its names under ``TYPE_CHECKING`` (what type checkers see), lists them in
``__all__`` and maps each to its module in a literal ``EXPORTS`` dict, which :func:`lazy_face`
turns into the module's ``__getattr__`` and ``__dir__`` (PEP 562). ``tests/test_layout.py`` checks
that the three agree.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping


def lazy_face(
    package: str, exports: Mapping[str, str]
) -> tuple[Callable[[str], object], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose names live in the modules
    ``exports`` gives them (``{"Store": ".local"}``, relative to ``package``)."""

    def __getattr__(name: str) -> object:
        module = exports.get(name)
        if module is None:
            msg = f"module {package!r} has no attribute {name!r}"
            raise AttributeError(msg)
        return getattr(importlib.import_module(module, package), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
