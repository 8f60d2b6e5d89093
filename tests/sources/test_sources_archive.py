"""Reading source archives: members, unpacking, .deb, and the safety checks on names and symlinks."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest
from conftest import require_tool
from source_helpers import Entry, make_deb, make_tar, make_zip

from eifbuild.errors import ArchiveError
from eifbuild.sources import nar_digest_of_path
from eifbuild.sources.archive import detect_format, extract_member, nar_digest_of_archive, unpack

GOOD = [
    Entry("pkg-1.0/", dir=True),
    Entry("pkg-1.0/README", b"read me\n"),
    Entry("pkg-1.0/bin/tool", b"\x7fELF...", mode=0o755),
    Entry("pkg-1.0/lib/", dir=True),
    Entry("pkg-1.0/lib/current", symlink="../bin/tool"),
    Entry("pkg-1.0/docs/copy", hardlink="pkg-1.0/README"),
]


@pytest.mark.parametrize("compression", ["gz", "xz", "bz2", "zst", ""])
def test_formats_are_sniffed_not_guessed_from_names(tmp_path: Path, compression: str) -> None:
    archive = make_tar(tmp_path / "no-extension", GOOD, compression=compression)
    assert detect_format(archive) == "tar"
    assert detect_format(make_zip(tmp_path / "z.bin", GOOD[:3])) == "zip"


def test_unknown_format_is_rejected(tmp_path: Path) -> None:
    junk = tmp_path / "junk.tar.gz"
    junk.write_bytes(b"hello, not an archive" * 30)
    with pytest.raises(ArchiveError) as info:
        detect_format(junk)
    supported = "tar, tar.gz, tar.bz2, tar.xz, tar.zst, zip, deb"
    assert str(info.value) == f"{junk}: not a recognised archive (supported: {supported})"


def test_extract_member_after_strip(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "a.tar.gz", GOOD)
    sha, size = extract_member(archive, "bin/tool", tmp_path / "tool", strip=1)
    assert (tmp_path / "tool").read_bytes() == b"\x7fELF..."
    assert size == 7
    assert sha == nar_sha(tmp_path / "tool")


def nar_sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_extract_member_through_a_hard_link(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "a.tar.gz", GOOD)
    extract_member(archive, "docs/copy", tmp_path / "copy", strip=1)
    assert (tmp_path / "copy").read_bytes() == b"read me\n"


def test_missing_member_suggests_a_close_name(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "a.tar.gz", GOOD)
    with pytest.raises(ArchiveError) as info:
        extract_member(archive, "bin/tol", tmp_path / "x", strip=1)
    assert str(info.value) == (
        f"{archive}, member 'bin/tol': no such file in the archive after strip = 1 (did you mean 'bin/tool'?)"
    )
    with pytest.raises(ArchiveError, match="member is a directory, not a file"):
        extract_member(archive, "lib", tmp_path / "y", strip=1)
    with pytest.raises(
        ArchiveError, match=r"member is a symlink to '\.\./bin/tool'; name the file it points to"
    ):
        extract_member(archive, "lib/current", tmp_path / "z", strip=1)


def test_unpack_writes_the_tree_and_returns_its_nar_hash(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "a.tar.xz", GOOD, compression="xz")
    out = tmp_path / "out"
    out.mkdir()
    digest = unpack(archive, out, strip=1)
    assert (out / "README").read_bytes() == b"read me\n"
    assert os.readlink(out / "lib" / "current") == "../bin/tool"
    assert (out / "docs" / "copy").read_bytes() == b"read me\n"
    assert stat.S_IMODE((out / "bin" / "tool").stat().st_mode) == 0o755
    assert stat.S_IMODE((out / "README").stat().st_mode) == 0o644
    assert digest == nar_digest_of_path(out)
    assert digest == nar_digest_of_archive(archive, strip=1)


def test_deb_members_come_from_data_tar(tmp_path: Path) -> None:
    require_tool("dpkg-deb")
    deb = make_deb(
        tmp_path / "demo.deb", {"usr/src/linux-demo.tar.xz": b"pretend tarball", "usr/bin/x": b"x"}
    )
    assert detect_format(deb) == "deb"
    sha, size = extract_member(deb, "usr/src/linux-demo.tar.xz", tmp_path / "src.tar.xz")
    assert (tmp_path / "src.tar.xz").read_bytes() == b"pretend tarball"
    assert (sha, size) == (hashlib.sha256(b"pretend tarball").hexdigest(), 15)
    out = tmp_path / "out"
    out.mkdir()
    unpack(deb, out)
    assert (out / "usr" / "bin" / "x").read_bytes() == b"x"


def test_deb_with_gzip_data(tmp_path: Path) -> None:
    require_tool("dpkg-deb")
    deb = make_deb(tmp_path / "gz.deb", {"etc/f": b"gz"}, compression="gzip")
    extract_member(deb, "etc/f", tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == b"gz"


def test_deb_with_zstd_data(tmp_path: Path) -> None:
    """Ubuntu's packages use data.tar.zst."""
    require_tool("dpkg-deb")
    deb = make_deb(tmp_path / "zst.deb", {"etc/f": b"zst"}, compression="zstd")
    extract_member(deb, "etc/f", tmp_path / "f")
    assert (tmp_path / "f").read_bytes() == b"zst"


def test_tar_zst_member_and_tree(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "a.tar.zst", GOOD, compression="zst")
    assert nar_digest_of_archive(archive, strip=1) == nar_digest_of_archive(
        make_tar(tmp_path / "b.tar", GOOD, compression=""), strip=1
    )
    extract_member(archive, "bin/tool", tmp_path / "tool", strip=1)
    assert (tmp_path / "tool").read_bytes() == b"\x7fELF..."


def test_truncated_zstd_is_an_archive_error(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "a.tar.zst", [Entry("f", os.urandom(100_000))], compression="zst")
    archive.write_bytes(archive.read_bytes()[:50_000])
    with pytest.raises(ArchiveError, match="corrupt or truncated archive"):
        nar_digest_of_archive(archive)


# -- unsafe archives ---------------------------------------------------------------------------------
UNSAFE = {
    "dotdot": ([Entry("top/../../evil", b"x")], "'..' in archive path", "top/../../evil"),
    "absolute": ([Entry("/etc/passwd", b"x")], "absolute path in archive", "/etc/passwd"),
    "symlink-absolute": (
        [Entry("top/", dir=True), Entry("top/l", symlink="/etc/passwd")],
        "symlink to the absolute path '/etc/passwd' points outside the tree",
        "top/l",
    ),
    "symlink-climbs-out": (
        [Entry("top/sub/", dir=True), Entry("top/sub/l", symlink="../../../etc")],
        "symlink to '../../../etc' points outside the tree",
        "top/sub/l",
    ),
    # 'a' points at the root; 'x' -> a/.. looks harmless lexically but leaves the tree.
    "symlink-chain": (
        [Entry("top/a", symlink="."), Entry("top/x", symlink="a/..")],
        "symlink to 'a/..' points outside the tree",
        "top/x",
    ),
    "through-symlink": (
        [Entry("top/d", symlink="/tmp"), Entry("top/d/evil", b"x")],
        "path goes through the symlink 'd'",
        "top/d/evil",
    ),
    "duplicate": (
        [Entry("top/f", b"1"), Entry("top/f", b"2")],
        "duplicate member (the archive holds this path more than once)",
        "top/f",
    ),
    "device": (
        [Entry("top/dev", device=True)],
        "device files and FIFOs are not allowed in source archives",
        "top/dev",
    ),
    "loop": (
        [Entry("top/a", symlink="b"), Entry("top/b", symlink="a")],
        "symlink loop (more than 40 links to follow)",
        "top/a",
    ),
    # Each link doubles the work of resolving the next: without a total bound this never ends.
    "symlink-bomb": (
        [
            Entry("top/l0", symlink="."),
            *(Entry(f"top/l{i}", symlink=f"l{i - 1}/l{i - 1}") for i in range(1, 60)),
        ],
        "symlink loop (more than 40 links to follow)",
        "top/l5",  # 1 + 2 + 4 + 8 + 16 + 32 follows: Linux gives up there too
    ),
    "strip-drops-file": ([Entry("toplevel-file", b"x")], "strip = 1 would drop this file", "toplevel-file"),
}


def _operate(operation: str, archive: Path, out: Path) -> None:
    if operation == "unpack":
        unpack(archive, out, strip=1)
    else:
        nar_digest_of_archive(archive, strip=1)


@pytest.mark.parametrize("case", sorted(UNSAFE))
@pytest.mark.parametrize("operation", ["unpack", "nar"])
def test_unsafe_archives_are_rejected(tmp_path: Path, case: str, operation: str) -> None:
    entries, message, member = UNSAFE[case]
    archive = make_tar(tmp_path / "bad.tar.gz", entries)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ArchiveError) as info:
        _operate(operation, archive, out)
    assert str(info.value).startswith(f"{archive}, member {member!r}: {message}")
    assert not (tmp_path / "evil").exists()
    assert not any(p.is_symlink() for p in out.rglob("*"))


def test_unsafe_names_are_rejected_when_taking_a_member(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "bad.tar.gz", [Entry("ok", b"fine"), Entry("../evil", b"x")])
    with pytest.raises(ArchiveError, match=r"member '../evil': '..' in archive path"):
        extract_member(archive, "ok", tmp_path / "ok")
    assert not (tmp_path / "evil").exists()


def test_zip_with_escaping_symlink_is_rejected(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "bad.zip", [Entry("l", symlink="../../x")])
    with pytest.raises(ArchiveError, match=r"symlink to '\.\./\.\./x' points outside the tree"):
        nar_digest_of_archive(archive)


def test_zip_with_dotdot_is_rejected(tmp_path: Path) -> None:
    archive = make_zip(tmp_path / "bad.zip", [Entry("a/../../x", b"x")])
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ArchiveError, match=r"'\.\.' in archive path"):
        unpack(archive, out)


def test_truncated_archive_is_an_archive_error(tmp_path: Path) -> None:
    archive = make_tar(tmp_path / "t.tar.xz", [Entry("f", os.urandom(200_000))], compression="xz")
    cut = tmp_path / "cut.tar.xz"
    cut.write_bytes(archive.read_bytes()[:5000])
    with pytest.raises(ArchiveError, match="corrupt or truncated archive"):
        nar_digest_of_archive(cut)
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(ArchiveError, match="corrupt or truncated archive"):
        unpack(cut, out)
