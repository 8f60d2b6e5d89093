"""Deterministic benchmark inputs: large random files and rootfs-like trees, generated once and cached.

A cached input is complete when its ``.done`` marker exists (written last), so an interrupted
generation is redone rather than used.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Final

from harness import MIB, progress

MTIME: Final = 1_700_000_000  # every entry of a generated tree (what the cpio pipeline normalises to)
# Mostly small files, like a distribution's rootfs; every 1000th file is 1 MiB.
FILE_SIZES: Final = (0, 100, 700, 2_000, 6_000, 20_000)
SMALL_SIZES: Final = (0, 10, 100, 300)
PER_DIR: Final = 100
DIRS_PER_GROUP: Final = 20


def _done(path: Path) -> Path:
    return path.with_name(path.name + ".done")


def random_file(path: Path, size: int, seed: int) -> Path:
    """``size`` pseudo-random bytes at ``path`` (kept between runs)."""
    if _done(path).exists() and path.exists() and path.stat().st_size == size:
        return path
    progress(f"generating {path.name} ({size / MIB:.0f} MiB)")
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    left = size
    with path.open("wb") as fh:
        while left:
            n = min(left, 8 * MIB)
            fh.write(rng.randbytes(n))
            left -= n
    _done(path).touch()
    return path


def make_tree(
    root: Path, files: int, *, sizes: tuple[int, ...] = FILE_SIZES, big_every: int = 1000, seed: int = 1
) -> int:
    """``files`` regular files in two levels of directories, 1 in 50 with a symlink beside it, and a
    few hard links; modes already normalised (dirs 0755, files 0644, 1 in 10 0755), every mtime
    ``MTIME``. Sizes are drawn from ``sizes``, but every ``big_every``-th file has 1 MiB (0: none).
    Returns the total content size.
    """
    rng = random.Random(seed)  # noqa: S311 - test data, not secrets
    total = 0
    for i in range(files):
        d = root / f"d{i // (PER_DIR * DIRS_PER_GROUP):03d}" / f"s{(i // PER_DIR) % DIRS_PER_GROUP:02d}"
        if i % PER_DIR == 0:
            d.mkdir(parents=True, exist_ok=True)
        size = MIB if big_every and i % big_every == big_every - 1 else rng.choice(sizes)
        path = d / f"file-{i:06d}.dat"
        path.write_bytes(rng.randbytes(size))
        path.chmod(0o755 if i % 10 == 0 else 0o644)
        total += size
        if i % 50 == 1:
            os.symlink(f"file-{i:06d}.dat", d / f"link-{i:06d}")
        if i % 5000 == 2:
            os.link(path, d / f"hard-{i:06d}.dat")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            os.chmod(os.path.join(dirpath, name), 0o755)  # noqa: S103 - a normalised tree
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (MTIME, MTIME), follow_symlinks=False)
    root.chmod(0o755)
    os.utime(root, (MTIME, MTIME))
    return total


def warm(*paths: Path) -> None:
    """Read files (or every file below directories) into the page cache.

    Run untimed before each measured command: this machine's memory reclaim evicts cached pages
    between runs, and a command that finds its input on disk measures the disk, not itself.
    """
    for path in paths:
        if path.is_dir():
            for dirpath, _, filenames in os.walk(path):
                warm(*(Path(dirpath, name) for name in filenames))
        elif path.is_file() and not path.is_symlink():
            with path.open("rb") as fh:
                while fh.read(8 * MIB):
                    pass


def cached_tree(root: Path, files: int) -> Path:
    """:func:`make_tree` at ``root``, reused while its marker exists."""
    if _done(root).exists() and root.is_dir():
        return root
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    progress(f"generating a {files}-file tree in {root}")
    size = make_tree(root, files)
    progress(f"tree: {files} files, {size / MIB:.0f} MiB")
    _done(root).touch()
    return root
