from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path

import pytest

from eifbuild.errors import ArchiveError
from eifbuild.plan.treedigest import tree_digest


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
