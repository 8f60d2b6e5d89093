"""What one benchmark run uses: sizes, repetitions, the interpreter and the directories."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from harness import child_env

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path


@dataclass(frozen=True)
class Options:
    python: str  # the interpreter that runs eifbuild and doit (a venv's, to measure a clean install)
    repo: Path
    data: Path  # cached generated inputs
    work: Path  # this run's scratch space (removed at the end)
    repeat: int
    quick: bool
    pack_sizes: tuple[int, ...]  # MiB of ramdisk data
    pack_ratio_size: int  # the size whose time ratio is the goal
    tree_files: int  # files of the ramdisk benchmark's tree
    noop_files: int  # files of the no-op benchmark's rootfs
    demo_repeat: int  # cold/warm demo builds (each cold one rebuilds musl)
    before: str | None = None  # an interpreter with an older eifbuild: extra rows to compare with

    @property
    def kernel_config(self) -> Path | None:
        config = self.repo / "examples" / "kernel" / "x86_64" / "bzImage.config"
        return config if config.is_file() else None

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment of eifbuild/doit runs: no PYTHONDONTWRITEBYTECODE, no inherited store."""
        return child_env(extra, drop=("EIFBUILD_CACHE", "EIFBUILD_ZIG_CACHE", "EIFBUILD_SOURCES_DIR"))
