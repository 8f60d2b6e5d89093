"""The EIF format: reader, writer, checker, metadata, PCRs and signing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_exports

if TYPE_CHECKING:
    from .reader import EifImage, read_eif
    from .sign import Signer

__all__ = ["EifImage", "Signer", "read_eif"]

__getattr__ = lazy_exports(__name__, {"reader": ("EifImage", "read_eif"), "sign": ("Signer",)})
