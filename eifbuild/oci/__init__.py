"""OCI images as the app: references, transports, blob import, layers to rootfs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_face

if TYPE_CHECKING:
    from .image import (
        OciImage,
        app_command,
        cached_image,
        image_arches,
        parse_image_ref,
        platform_manifests,
        registry_tag,
        resolve_image,
        resolve_tag,
        rootfs_entries,
        unpack_image,
    )

EXPORTS = {
    "OciImage": ".image",
    "app_command": ".image",
    "cached_image": ".image",
    "image_arches": ".image",
    "parse_image_ref": ".image",
    "platform_manifests": ".image",
    "registry_tag": ".image",
    "resolve_image": ".image",
    "resolve_tag": ".image",
    "rootfs_entries": ".image",
    "unpack_image": ".image",
}

__all__ = [
    "OciImage",
    "app_command",
    "cached_image",
    "image_arches",
    "parse_image_ref",
    "platform_manifests",
    "registry_tag",
    "resolve_image",
    "resolve_tag",
    "rootfs_entries",
    "unpack_image",
]

if not TYPE_CHECKING:  # type checkers see the imports above
    __getattr__, __dir__ = lazy_face(__name__, EXPORTS)
