"""Running an EIF locally: QEMU boots (``boot``, with the command lines in ``_qemu``), the console
watcher (``_console``), the ``--attest`` comparison (``_attest``) and the vhost-user-vsock back-end
for the nitro-enclave machine (the ``vsock`` subpackage)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_face

if TYPE_CHECKING:
    from .boot import BootOptions, boot_eif

EXPORTS = {
    "BootOptions": ".boot",
    "boot_eif": ".boot",
}

__all__ = ["BootOptions", "boot_eif"]

if not TYPE_CHECKING:  # type checkers see the imports above
    __getattr__, __dir__ = lazy_face(__name__, EXPORTS)
