"""A stand-in project for end-to-end `doit` tests: its files, its stand-in sources on a real HTTP
server, and what a `doit` run ran (shared by the plan, store and runtime tests)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pathlib import Path

    from source_helpers import LocalServer

DODO = "# Tasks for ./eif.toml: doit eif | doit check | doit list | doit clean\nfrom eifbuild.tasks import *  # noqa: F403\n"


def seeded(seed: str, size: int) -> bytes:
    out = b""
    i = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{i}".encode()).digest()
        i += 1
    return out[:size]


@dataclass
class Project:
    root: Path
    server: LocalServer

    def write(self, rel: str, text: str) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        return path

    def serve(self, name: str, data: bytes) -> tuple[str, str]:
        return self.server.serve(f"/{name}", data), hashlib.sha256(data).hexdigest()

    def recipe(self, kernels: dict[str, bytes], *, extra: str = "") -> None:
        parts = ['[recipe]\nname = "test"\ndescription = "stand-ins"\n']
        parts.append('[defaults]\nkernel = "kernel"\ncmdline = "cmdline"\n')
        for arch, data in kernels.items():
            url, digest = self.serve(f"kernel-{arch}-{hashlib.sha256(data).hexdigest()[:8]}", data)
            parts.append(f'[sources.kernel.{arch}]\nurl = "{url}"\nsha256 = "{digest}"\n')
        url, digest = self.serve("cmdline", b"console=ttyS0 panic=30\n")
        parts.append(f'[sources.cmdline]\nurl = "{url}"\nsha256 = "{digest}"\n')
        self.write("recipes/test.toml", "\n".join(parts) + extra)

    def doit(self, *args: str, env: dict[str, str] | None = None, check: bool = True) -> Run:
        result = subprocess.run(
            [sys.executable, "-m", "doit", *args],
            cwd=self.root,
            capture_output=True,
            text=True,
            env={**os.environ, **(env or {})},
            check=False,
            timeout=900,
        )
        run = Run(result)
        if check:
            assert result.returncode == 0, result.stdout + result.stderr
        return run

    def eif(self, arch: str = "x86_64") -> Path:
        return self.root / "build" / f"hello-{arch}.eif"

    def pcrs(self, arch: str = "x86_64") -> dict[str, str]:
        data: dict[str, str] = json.loads((self.root / "build" / f"hello-{arch}.pcr.json").read_text())
        return data


@dataclass
class Run:
    result: subprocess.CompletedProcess[str]

    @property
    def ran(self) -> set[str]:
        return {line[3:].strip() for line in self.result.stdout.splitlines() if line.startswith(".  ")}

    @property
    def skipped(self) -> set[str]:
        return {line[3:].strip() for line in self.result.stdout.splitlines() if line.startswith("-- ")}


EIF_TOML = """\
    [eif]
    name = "hello"
    version = "0.1.0"
    arch = ["x86_64"]
    recipes = ["recipes/test.toml"]
    build_time = "2024-01-01T00:00:00+00:00"

    [bootstrap]
    init = { path = "init.bin" }

    [app]
    rootfs = "rootfs"
    cmd = ["/bin/app", "--serve"]
    env = { GREETING = "hello from the enclave" }
"""


ALL_X86 = {
    "fetch:test.kernel.x86_64",
    "fetch:test.cmdline",
    "ramdisk:bootstrap:x86_64",
    "ramdisk:app:x86_64",
    "eif:x86_64",
}
