"""``eifbuild qemu build``: a QEMU with the nitro-enclave machine, built from Debian's source.

The build itself is a shell script shipped in the package (``build-qemu-nitro.sh`` beside this
module): it installs the build dependencies with apt, fetches the pinned bookworm-backports source
and builds only qemu-system-x86_64 with libcbor into a prefix it reuses when that prefix already
holds a working binary (by default ``~/.cache/eifbuild/qemu-nitro/<version>/``).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ..errors import ToolError

if TYPE_CHECKING:
    from collections.abc import Sequence

SCRIPT: Final = Path(__file__).with_name("build-qemu-nitro.sh")
BUILD_COMMAND: Final = "eifbuild qemu build"


def build_qemu_nitro(*, prefix: Path | None = None, version: str | None = None, deps: bool = True) -> Path:
    """Build (or reuse) a qemu-system-x86_64 with the nitro-enclave machine; return its path.

    The script's progress and errors go to stderr as it writes them."""
    bash = shutil.which("bash")
    if bash is None:
        msg = f"{BUILD_COMMAND} needs bash"
        raise ToolError(msg, cmd=["bash"])
    argv = [bash, str(SCRIPT), *_options(prefix, version, deps)]
    proc = subprocess.run(argv, stdout=subprocess.PIPE, text=True, check=False)
    lines = proc.stdout.splitlines()
    if proc.returncode != 0 or not lines:
        msg = f"{BUILD_COMMAND} failed (exit {proc.returncode}): see its messages above"
        raise ToolError(msg, cmd=argv)
    return Path(lines[-1])


def _options(prefix: Path | None, version: str | None, deps: bool) -> Sequence[str]:
    options: list[str] = []
    if prefix is not None:
        options += ["--prefix", str(prefix.absolute())]
    if version is not None:
        options += ["--version", version]
    if not deps:
        options.append("--no-deps")
    return options
