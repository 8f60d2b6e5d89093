"""OCI images as the app: references, transports, blob import, layers to rootfs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_exports

if TYPE_CHECKING:
    from .image import (
        LocalRef,
        OciImage,
        app_command,
        cached_image,
        parse_image_ref,
        platform_manifests,
        registry_tag,
        resolve_image,
        resolve_tag,
        rootfs_entries,
        unpack_image,
    )
    from .layers import LayerFile, Rootfs
    from .registry import RegistryRef

__all__ = [
    "LayerFile",
    "LocalRef",
    "OciImage",
    "RegistryRef",
    "Rootfs",
    "app_command",
    "cached_image",
    "parse_image_ref",
    "platform_manifests",
    "registry_tag",
    "resolve_image",
    "resolve_tag",
    "rootfs_entries",
    "unpack_image",
]

if not TYPE_CHECKING:  # type checkers see the imports above; a name missing there is an error
    __getattr__ = lazy_exports(__name__, __file__)
