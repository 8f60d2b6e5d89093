"""Running an EIF locally: QEMU boots (``boot``, with the command lines in ``_qemu``), the console
watcher (``_console``), the ``--attest`` comparison (``_attest``) and the vhost-user-vsock back-end
for the nitro-enclave machine (the ``vsock`` subpackage), and building a QEMU that has that machine
(``qemubuild``, with its shipped script)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_face

if TYPE_CHECKING:
    from .boot import BootOptions, boot_eif
    from .qemubuild import build_qemu_nitro

EXPORTS = {
    "BootOptions": ".boot",
    "boot_eif": ".boot",
    "build_qemu_nitro": ".qemubuild",
}

__all__ = ["BootOptions", "boot_eif", "build_qemu_nitro"]

if not TYPE_CHECKING:  # type checkers see the imports above
    __getattr__, __dir__ = lazy_face(__name__, EXPORTS)
