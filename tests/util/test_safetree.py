"""The one safe tree writer: no symlink followed for a parent or the last component, and no device
node or setuid/setgid bit unless asked."""

from __future__ import annotations

import io
import os
import stat
from pathlib import Path

import pytest

from eifbuild.util.safetree import Skipped, TreeWriter, UnsafePathError


def test_a_write_below_a_symlink_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "root").mkdir()
    with TreeWriter(tmp_path / "root") as writer:
        writer.symlink("zz", str(outside))  # link, then write through it
        with pytest.raises(UnsafePathError, match="parent 'zz' is a symlink"):
            writer.write_file("zz/f", io.BytesIO(b"x"))
        with pytest.raises(UnsafePathError, match="parent 'zz' is a symlink"):
            writer.mkdir("zz/d")
        with pytest.raises(UnsafePathError):
            writer.write_file("../escape", io.BytesIO(b"x"))
        with pytest.raises(FileExistsError):  # the last component is never followed either
            writer.write_file("zz", io.BytesIO(b"x"))
        with pytest.raises(OSError):  # noqa: PT011 - ELOOP
            writer.open_file("zz", exclusive=False)
        writer.chmod("zz", 0o777)  # a symlink: left alone
    assert list(outside.iterdir()) == []


def test_setuid_bits_and_devices_only_when_asked(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    with TreeWriter(tmp_path / "a") as writer:
        writer.write_file("bin/su", io.BytesIO(b"x"), 0o4755)
        writer.mkdir("srv")
        writer.chmod("srv", 0o2775)  # a setgid directory only passes its group on: kept
        assert not writer.device("dev/mem", "char", 0o666, (1, 1))
    assert writer.skipped == [
        Skipped("bin/su", "setuid/setgid bits of 4755"),
        Skipped("dev/mem", "char device 1:1"),
    ]
    assert stat.S_IMODE((tmp_path / "a/bin/su").stat().st_mode) == 0o755
    assert stat.S_IMODE((tmp_path / "a/srv").stat().st_mode) == 0o2775
    assert not os.path.lexists(tmp_path / "a/dev/mem")
    (tmp_path / "b").mkdir()
    with TreeWriter(tmp_path / "b", preserve_special=True) as writer:
        writer.write_file("bin/su", io.BytesIO(b"x"), 0o4755)
        if os.geteuid() == 0:
            assert writer.device("dev/mem", "char", 0o640, (1, 1))
    assert writer.skipped == []
    assert stat.S_IMODE((tmp_path / "b/bin/su").stat().st_mode) == 0o4755
    if os.geteuid() == 0:
        st = os.lstat(tmp_path / "b/dev/mem")
        assert stat.S_ISCHR(st.st_mode)
        assert stat.S_IMODE(st.st_mode) == 0o640
