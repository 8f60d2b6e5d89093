"""fsutil.atomic_write: all or nothing, whether it renames over the old file or unlinks it first;
the streaming hasher."""

from __future__ import annotations

import hashlib
import io
import os
from hashlib import sha256, sha512
from typing import TYPE_CHECKING
from unittest import mock

import pytest

from eifbuild.util import fsutil
from eifbuild.util.fsutil import CHUNK, StreamHasher, atomic_write, copy_hashed, hash_stream

if TYPE_CHECKING:
    from pathlib import Path


@pytest.mark.parametrize("big", [False, True])
def test_replaces_an_existing_file_with_the_mode_asked(tmp_path: Path, big: bool) -> None:
    out = tmp_path / "out.eif"
    out.write_bytes(b"old")
    with atomic_write(out, mode=0o640, big=big) as fh:
        fh.write(b"new")
    assert out.read_bytes() == b"new"
    assert out.stat().st_mode & 0o777 == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["out.eif"]


@pytest.mark.parametrize("big", [False, True])
def test_a_failed_write_keeps_the_old_file_and_no_temp(tmp_path: Path, big: bool) -> None:
    out = tmp_path / "out.eif"
    out.write_bytes(b"old")

    def interrupted_write() -> None:
        with atomic_write(out, big=big) as fh:
            fh.write(b"half")
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        interrupted_write()
    assert out.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["out.eif"]


def test_big_output_into_a_new_directory(tmp_path: Path) -> None:
    out = tmp_path / "new" / "dir" / "out.cpio"
    with atomic_write(out, big=True) as fh:
        fh.write(b"x")
    assert out.read_bytes() == b"x"


def test_copy_hashed_writes_hashes_and_counts_every_chunk() -> None:
    data = bytes(range(256)) * ((CHUNK * 2 + 3) // 256 + 1)
    hasher, out, chunks = StreamHasher(("sha256", "sha512")), io.BytesIO(), []
    assert copy_hashed(io.BytesIO(data), hasher, out, on_chunk=chunks.append) == len(data)
    assert out.getvalue() == data
    assert sum(chunks) == hasher.size == len(data)
    assert hasher.hexdigests() == {"sha256": sha256(data).hexdigest(), "sha512": sha512(data).hexdigest()}
    assert hash_stream(io.BytesIO(data)) == (sha256(data).hexdigest(), len(data))


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, 2 * CHUNK + 7])
def test_threaded_stream_hasher_gives_the_plain_digests(size: int) -> None:
    data = os.urandom(size)
    threaded = StreamHasher(("sha384", "sha256", "sha1"), threaded=True)
    copy_hashed(io.BytesIO(data), threaded)
    expected = {name: hashlib.new(name, data).hexdigest() for name in ("sha1", "sha256", "sha384")}
    assert threaded.hexdigests() == expected
    assert threaded.size == size
    assert threaded.hexdigest("sha256") == expected["sha256"]  # the worker is done: digests stay


def test_threaded_stream_hasher_raises_a_worker_failure() -> None:
    class Broken:
        def update(self, data: bytes) -> None:
            raise MemoryError("worker failed")

    hasher = StreamHasher(("sha256", "sha384"), threaded=True)
    hasher._hashers[1] = Broken()  # type: ignore[call-overload]  # the worker's hasher
    hasher.update(b"x" * 5000)
    with pytest.raises(MemoryError, match="worker failed"):
        hasher.hexdigests()


def test_remembered_digests_serve_hash_file_until_the_file_changes(tmp_path: Path) -> None:
    path = tmp_path / "image.eif"
    path.write_bytes(b"x" * 1000)
    digests = fsutil.remember_digests(path, ("sha256", "sha384"))
    assert digests == {name: hashlib.new(name, b"x" * 1000).hexdigest() for name in ("sha256", "sha384")}
    link = tmp_path / "published.eif"
    os.link(path, link)  # the published hard link: the same file, its ctime moved
    with mock.patch("eifbuild.util.fsutil.hash_stream", side_effect=AssertionError("read again")):
        assert fsutil.hash_file(link, "sha384") == digests["sha384"]
        assert fsutil.hash_file(path) == digests["sha256"]
    st = path.stat()
    path.write_bytes(b"y" * 1000)  # same size: the mtime moves
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1))
    assert fsutil.hash_file(path) == hashlib.sha256(b"y" * 1000).hexdigest()
    path.write_bytes(b"z" * 999)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # the old mtime, another size
    assert fsutil.hash_file(path) == hashlib.sha256(b"z" * 999).hexdigest()
