"""GNU cpio as the oracle for eifbuild's canonical newc writer, and random trees to feed both.

:func:`gnu_archive` normalises a tree the way the canonical form is defined (touch every entry to
``mtime``; for ``normalize`` also chmod) and runs the reference pipeline. :func:`make_tree` builds a
host tree from a :class:`Node` list (the hypothesis strategy :func:`trees` draws those lists).
"""

from __future__ import annotations

import os
import random
import re
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Literal

from conftest import require_tool
from hypothesis import strategies as st

from eifbuild.ramdisk.layout import normalized_mode

# What the canonical form is defined by (issue 3), literally.
PIPELINE = (
    "find . -mindepth 1 -printf '%P\\0' | LC_ALL=C sort -z | cpio -o -H newc -R +0:+0 {flags} --null --quiet"
)
IS_ROOT = os.geteuid() == 0


@cache
def _reproducible_flags() -> str:
    """``--reproducible`` on cpio 2.13; its 2.13 meaning spelled out on later versions.

    From 2.14 on ``--reproducible`` also implies ``--ignore-dirnlink`` (directory nlink always 2);
    the canonical form keeps 2.13's ``2 + subdirectories`` (what ext4/tmpfs report).
    """
    out = subprocess.run(["cpio", "--version"], capture_output=True, text=True, check=True).stdout
    found = re.search(r"(\d+)\.(\d+)", out)
    assert found, out
    version = (int(found.group(1)), int(found.group(2)))
    return "--reproducible" if version < (2, 14) else "--ignore-devno --renumber-inodes"


def touch_all(root: Path, mtime: int) -> None:
    subprocess.run(["find", str(root), "-exec", "touch", "-h", "-d", f"@{mtime}", "{}", "+"], check=True)


def chmod_normalize(root: Path) -> None:
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            mode = os.lstat(p).st_mode
            if not os.path.islink(p):
                os.chmod(p, normalized_mode(mode))


def gnu_archive(root: Path, *, mtime: int, modes: Literal["normalize", "preserve"] = "preserve") -> bytes:
    """The oracle: normalise ``root`` in place, then archive it with GNU cpio."""
    require_tool("cpio")
    if modes == "normalize":
        chmod_normalize(root)
    touch_all(root, mtime)
    cmd = PIPELINE.format(flags=_reproducible_flags())
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", cmd], cwd=root, capture_output=True, check=True
    ).stdout


# ---------------------------------------------------------------------------------------------------
# random trees


@dataclass(frozen=True)
class Node:
    """One object of a test tree; ``path`` is bytes (names may be any bytes but '/', NUL, newline)."""

    path: bytes
    kind: Literal["dir", "file", "symlink", "hardlink"]
    mode: int = 0o644
    size: int = 0
    seed: int = 0
    target: bytes = b""  # symlink target, or the path a hard link points to


def content(node: Node) -> bytes:
    return random.Random(node.seed).randbytes(node.size)  # noqa: S311 - test data


def make_tree(root: Path, nodes: list[Node], *, mtimes: random.Random | None = None) -> None:
    """Create ``nodes`` below ``root`` in list order (parents first), modes applied last."""
    base = os.fsencode(root)
    for node in nodes:
        p = os.path.join(base, node.path)
        if node.kind == "dir":
            os.mkdir(p)
        elif node.kind == "file":
            with open(p, "wb") as fh:
                fh.write(content(node))
        elif node.kind == "symlink":
            os.symlink(node.target, p)
        else:
            os.link(os.path.join(base, node.target), p)
    for node in reversed(nodes):
        p = os.path.join(base, node.path)
        if node.kind in ("dir", "file"):
            os.chmod(p, node.mode)
        if mtimes is not None:
            t = mtimes.randrange(0, 2**32)
            os.utime(p, (t, t), follow_symlinks=False)


_ODD = [
    b" ",
    b"\xc3\xbc",
    b"\xe2\x98\x83",
    b"\xff",
    b"\x01",
    b"-",
    b".",
    b"a",
    b"B",
    b"~",
    b"\t",
    b"\xf0\x9f\x90\x8d",
]
names = st.one_of(
    st.lists(st.sampled_from(_ODD), min_size=1, max_size=6).map(b"".join),
    st.binary(min_size=1, max_size=10),
    st.sampled_from([b"a", b"b", b"a-b", b"a.b", b"A", b"z", b"bin", b"dev"]),
).filter(lambda n: b"/" not in n and b"\0" not in n and b"\n" not in n and n not in (b".", b".."))
SIZES = [0, 1, 3, 4, 5, 100, 511, 512, 513, 4096, 65537, 1 << 20]


def _perm(draw: st.DrawFn, kind: str, wild: bool) -> int:
    if not wild:
        return draw(st.sampled_from([0o644, 0o755, 0o600, 0o700, 0o444, 0o555, 0o640, 0o750]))
    mode = draw(st.integers(0, 0o7777))
    # Without root, the test itself must still be able to read the tree and clean it up.
    return mode if IS_ROOT else mode | (0o700 if kind == "dir" else 0o600)


@st.composite
def trees(draw: st.DrawFn, *, max_nodes: int = 25, wild_modes: bool = False) -> list[Node]:
    """A random tree: nested and empty dirs, files (empty up to 1 MiB), symlinks, hard links."""
    nodes: list[Node] = []
    dirs: list[bytes] = [b""]
    files: list[bytes] = []
    used: set[bytes] = set()
    big = 0
    for _ in range(draw(st.integers(1, max_nodes))):
        parent = draw(st.sampled_from(dirs))
        path = parent + b"/" + draw(names) if parent else draw(names)
        if path in used:
            continue
        used.add(path)
        kind = draw(
            st.sampled_from(["dir", "file", "file", "symlink", "hardlink"] if files else ["dir", "file"])
        )
        if kind == "dir":
            nodes.append(Node(path, "dir", _perm(draw, "dir", wild_modes)))
            dirs.append(path)
        elif kind == "file":
            size = draw(st.sampled_from(SIZES if big < 2 else SIZES[:-1]))
            big += size == SIZES[-1]
            seed = draw(st.integers(0, 2**32))
            nodes.append(Node(path, "file", _perm(draw, "file", wild_modes), size, seed))
            files.append(path)
        elif kind == "symlink":
            target = draw(st.one_of(st.sampled_from([b"nowhere", b"/etc/passwd", b"../up", b"."]), names))
            nodes.append(Node(path, "symlink", target=target))
        else:
            nodes.append(Node(path, "hardlink", target=draw(st.sampled_from(files))))
    return nodes
