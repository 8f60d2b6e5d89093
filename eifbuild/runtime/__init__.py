"""Running an EIF locally: QEMU boots (``boot``, with the command lines in ``qemu``), the console
watcher (``console``), the ``--attest`` comparison (``attest``) and the vhost-user-vsock back-end
for the nitro-enclave machine (the ``vsock`` subpackage)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_exports

if TYPE_CHECKING:
    from .boot import BootOptions, boot_eif

__all__ = ["BootOptions", "boot_eif"]

if not TYPE_CHECKING:  # type checkers see the imports above; a name missing there is an error
    __getattr__ = lazy_exports(__name__, __file__)
