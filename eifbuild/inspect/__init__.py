"""Inspecting existing EIFs by content: ``diff`` (which input changed, which PCRs it moves) and
``extract`` (every section as a file, ramdisks unpacked safely, enough to pack the same bytes)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_face

if TYPE_CHECKING:
    from .diff import diff_files
    from .extraction import extract
    from .report import diff_json, diff_text

EXPORTS = {
    "diff_files": ".diff",
    "extract": ".extraction",
    "diff_json": ".report",
    "diff_text": ".report",
}

__all__ = ["diff_files", "diff_json", "diff_text", "extract"]

if not TYPE_CHECKING:  # type checkers see the imports above
    __getattr__, __dir__ = lazy_face(__name__, EXPORTS)
