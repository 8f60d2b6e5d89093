from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from typing import TYPE_CHECKING
from unittest import mock

import pytest

from eifbuild.errors import ArchiveError
from eifbuild.plan import treedigest
from eifbuild.plan.treedigest import tree_digest

if TYPE_CHECKING:
    from collections.abc import Callable


def _tree(root: Path) -> Path:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "app").write_bytes(b"\x7fELF...")
    (root / "bin" / "app").chmod(0o755)
    (root / "etc").mkdir()
    (root / "etc" / "conf").write_text("a=1\n")
    (root / "empty").mkdir()
    (root / "link").symlink_to("bin/app")
    (root / "dangling").symlink_to("nowhere")
    return root


def test_same_tree_same_digest_anywhere(tmp_path: Path) -> None:
    a = _tree(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b, symlinks=True)
    os.utime(b / "etc" / "conf", (1, 1))
    assert tree_digest(a).digest == tree_digest(b).digest
    assert tree_digest(a).files == 7


@pytest.mark.parametrize(
    "change",
    [
        lambda r: (r / "etc" / "conf").write_text("a=2\n"),
        lambda r: (r / "etc" / "conf").chmod(0o600),
        lambda r: (r / "etc" / "new").write_text(""),
        lambda r: (r / "empty").rmdir(),
        lambda r: ((r / "link").unlink(), (r / "link").symlink_to("etc/conf")),
        lambda r: (r / "etc" / "conf").rename(r / "etc" / "conf2"),
        lambda r: os.link(r / "etc" / "conf", r / "etc" / "hard"),
    ],
    ids=["content", "mode", "new-file", "rmdir", "retarget", "rename", "hardlink"],
)
def test_every_relevant_change_moves_the_digest(tmp_path: Path, change) -> None:
    root = _tree(tmp_path / "t")
    cache = tmp_path / "cache.json"
    before = tree_digest(root, cache_path=cache).digest
    change(root)
    assert tree_digest(root, cache_path=cache).digest != before
    assert tree_digest(root).digest == tree_digest(root, cache_path=cache).digest


def test_hardlink_vs_copy_differ(tmp_path: Path) -> None:
    a = tmp_path / "a"
    a.mkdir()
    (a / "x").write_text("same")
    os.link(a / "x", a / "y")
    b = tmp_path / "b"
    b.mkdir()
    (b / "x").write_text("same")
    (b / "y").write_text("same")
    assert tree_digest(a).digest != tree_digest(b).digest


def test_noop_rehashes_nothing_and_touch_keeps_digest(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    cache = tmp_path / "cache.json"
    first = tree_digest(root, cache_path=cache)
    assert first.rehashed == 2
    again = tree_digest(root, cache_path=cache)
    assert (again.digest, again.rehashed) == (first.digest, 0)
    (root / "etc" / "conf").touch()
    touched = tree_digest(root, cache_path=cache)
    assert (touched.digest, touched.rehashed) == (first.digest, 1)


def test_times_outside_the_unsigned_64_bit_range(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    os.utime(root / "etc" / "conf", ns=(-86_400 * 10**9, -86_400 * 10**9))  # 1969-12-31
    cache = tmp_path / "cache.json"
    first = tree_digest(root, cache_path=cache)
    assert first.digest == tree_digest(_tree(tmp_path / "u")).digest  # times are not in the digest
    assert tree_digest(root, cache_path=cache).rehashed == 0
    (root / "etc" / "conf").write_text("a=2\n")
    os.utime(root / "etc" / "conf", ns=(-86_400 * 10**9, -86_400 * 10**9))
    assert tree_digest(root, cache_path=cache).digest != first.digest


def test_same_size_edit_with_restored_mtime_is_seen(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    cache = tmp_path / "cache.json"
    conf = root / "etc" / "conf"
    first = tree_digest(root, cache_path=cache)
    st = conf.stat()
    conf.write_text("a=9\n")  # same size
    os.utime(conf, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert conf.stat().st_mtime_ns == st.st_mtime_ns
    assert tree_digest(root, cache_path=cache).digest != first.digest


def test_sockets_are_ignored(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    before = tree_digest(root).digest
    sock = socket.socket(socket.AF_UNIX)
    try:
        sock.bind(str(root / "sock"))
        assert tree_digest(root).digest == before
    finally:
        sock.close()


def test_corrupt_cache_is_ignored(tmp_path: Path) -> None:
    root = _tree(tmp_path / "t")
    cache = tmp_path / "cache.json"
    expected = tree_digest(root).digest
    cache.write_text("{not json")
    assert tree_digest(root, cache_path=cache).digest == expected


def test_not_a_directory(tmp_path: Path) -> None:
    with pytest.raises(ArchiveError, match=r"missing: expected a directory$"):
        tree_digest(tmp_path / "missing")


def _bigger_tree(root: Path) -> Path:
    _tree(root)
    for d in range(5):
        (root / f"d{d}").mkdir()
        for i in range(40):
            (root / f"d{d}" / f"f{i}").write_text(f"{d}/{i}\n" * i)
    sock = socket.socket(socket.AF_UNIX)  # skipped by the walk, but it holds a position
    sock.bind(str(root / "d0" / "sock"))
    sock.close()
    return root


def test_the_parallel_fingerprint_is_the_single_walks(tmp_path: Path) -> None:
    root = str(_bigger_tree(tmp_path / "t"))
    single = treedigest._walk(root)
    halves = [treedigest._walk(root, part=0), treedigest._walk(root, part=1)]
    assert sorted(single.paths) == sorted(halves[0].paths + halves[1].paths)
    assert treedigest._parallel_fingerprint(root) == single.fingerprint()


@pytest.mark.parametrize(
    "change",
    [
        lambda r: (r / "d3" / "f7").write_text("edited\n"),
        lambda r: (r / "d4" / "f39").chmod(0o600),
        lambda r: (r / "d1" / "new").write_text(""),
        lambda r: (r / "d2" / "f1").unlink(),
    ],
    ids=["content", "mode", "new-file", "removed"],
)
def test_a_parallel_noop_check_sees_every_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: Callable[[Path], object]
) -> None:
    root = _bigger_tree(tmp_path / "t")
    cache = tmp_path / "cache.json"
    first = tree_digest(root, cache_path=cache)  # no summary yet: a single walk
    monkeypatch.setattr(treedigest, "PARALLEL_FROM", 0)
    forks = mock.Mock(wraps=os.fork)
    monkeypatch.setattr(treedigest.os, "fork", forks)
    again = tree_digest(root, cache_path=cache)
    assert (again.digest, again.rehashed, forks.call_count) == (first.digest, 0, 1)
    change(root)
    changed = tree_digest(root, cache_path=cache)
    assert changed.digest == tree_digest(root).digest != first.digest
    assert tree_digest(root, cache_path=cache).rehashed == 0


def test_an_unreadable_directory_under_a_parallel_walk_is_reported(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if os.geteuid() == 0:
        pytest.skip("root reads every directory")
    root = _bigger_tree(tmp_path / "t")
    cache = tmp_path / "cache.json"
    tree_digest(root, cache_path=cache)
    monkeypatch.setattr(treedigest, "PARALLEL_FROM", 0)
    (root / "d2").chmod(0)
    try:
        with pytest.raises(ArchiveError, match="cannot read directory"):
            tree_digest(root, cache_path=cache)
    finally:
        (root / "d2").chmod(0o755)


def test_a_failing_child_leaves_the_walk_to_this_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _bigger_tree(tmp_path / "t")
    cache = tmp_path / "cache.json"
    first = tree_digest(root, cache_path=cache)
    real = treedigest._walk

    def walk(path: str, part: int | None = None) -> treedigest._Listing:
        if part == 1:  # in the child
            raise ArchiveError("no", path=path)
        return real(path, part)

    monkeypatch.setattr(treedigest, "PARALLEL_FROM", 0)
    monkeypatch.setattr(treedigest, "_walk", walk)
    assert treedigest._parallel_fingerprint(str(root)) is None
    again = tree_digest(root, cache_path=cache)
    assert (again.digest, again.rehashed) == (first.digest, 0)
