"""fsutil.atomic_write: all or nothing, whether it renames over the old file or unlinks it first;
the streaming hasher."""

from __future__ import annotations

import io
from hashlib import sha256, sha512
from typing import TYPE_CHECKING

import pytest

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
