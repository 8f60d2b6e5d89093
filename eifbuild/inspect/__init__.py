"""Inspecting existing EIFs by content: ``diff`` (which input changed, which PCRs it moves) and
``extract`` (every section as a file, ramdisks unpacked safely, enough to pack the same bytes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_exports

if TYPE_CHECKING:
    from .diff import Change, DiffResult, diff_files
    from .extraction import ExtractResult, extract
    from .report import diff_json, diff_text

__all__ = [
    "Change",
    "DiffResult",
    "ExtractResult",
    "diff_files",
    "diff_json",
    "diff_text",
    "extract",
]

if not TYPE_CHECKING:  # type checkers see the imports above; a name missing there is an error
    __getattr__ = lazy_exports(__name__, __file__)
