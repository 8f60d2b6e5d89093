"""Layer application into the rootfs model: OCI changeset rules, umoci as oracle, unsafe layers."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
from conftest import require_tool
from oci_helpers import (
    M,
    layer,
    link_groups,
    model_listing,
    sample_image,
    tree_listing,
    write_layout,
)

from eifbuild.errors import ArchiveError
from eifbuild.oci import app_command, resolve_image, rootfs_entries, unpack_image
from eifbuild.oci._layers import Inode, LayerFile, Rootfs, escapes
from eifbuild.ramdisk import layout as ramdisk
from eifbuild.ramdisk import newc as cpio
from eifbuild.store import Store


def rootfs(tmp_path: Path, *layers: list[M]) -> Rootfs:
    files = []
    for i, members in enumerate(layers):
        path = tmp_path / f"layer{i}.tar"
        path.write_bytes(layer(members))
        files.append(LayerFile(f"sha256:{i:064x}", path))
    return Rootfs(files)


def listing(fs: Rootfs) -> dict[str, tuple[str, int, str]]:
    return model_listing(fs.entries())


def content(fs: Rootfs, path: str) -> bytes:
    entry = {e.path: e for e in fs.entries()}[path]
    assert entry.kind == "file"
    assert callable(entry.source)
    stream = entry.source()
    try:
        return stream.read()
    finally:
        stream.close()


# -- the rules ---------------------------------------------------------------------------------------
def test_whiteouts_remove_lower_paths_only(tmp_path: Path) -> None:
    fs = rootfs(
        tmp_path,
        [M("a", "dir"), M("a/keep"), M("a/gone"), M("d", "dir"), M("d/x"), M("d/sub", "dir"), M("d/sub/y")],
        [M("a/.wh.gone"), M("a/new"), M("a/.wh.new"), M(".wh.d"), M("a/.wh.never-existed")],
    )
    assert sorted(fs.nodes) == ["a", "a/keep", "a/new"]


def test_opaque_dir_keeps_what_its_own_layer_adds(tmp_path: Path) -> None:
    fs = rootfs(
        tmp_path,
        [
            M("o", "dir", mode=0o700),
            M("o/old"),
            M("o/olddir", "dir"),
            M("o/olddir/f"),
            M("o/sub", "dir"),
            M("o/sub/z"),
        ],
        [M("o/before"), M("o/sub/again"), M("o/.wh..wh..opq"), M("o/after")],
    )
    assert sorted(fs.nodes) == ["o", "o/after", "o/before", "o/sub", "o/sub/again"]
    assert fs.nodes["o"].mode == 0o700  # the opaque marker does not touch the directory itself


def test_root_opaque_marker_and_aufs_metadata(tmp_path: Path) -> None:
    fs = rootfs(tmp_path, [M("x"), M("y", "dir")], [M("z"), M(".wh..wh..opq"), M(".wh..wh.plnk", "dir")])
    assert sorted(fs.nodes) == ["z"]


def test_hard_links_share_an_inode_until_one_is_replaced(tmp_path: Path) -> None:
    fs = rootfs(
        tmp_path,
        [M("f", data=b"one", mode=0o4750), M("g", "hardlink", target="f"), M("h", "hardlink", target="./f")],
        [M("f", data=b"two")],
    )
    assert fs.nodes["g"] is fs.nodes["h"]
    assert fs.nodes["f"].ino != fs.nodes["g"].ino
    entries = {e.path: e for e in fs.entries()}
    assert entries["g"].kind == "file"
    assert entries["g"].mode == 0o4750
    assert entries["h"].kind == "hardlink"
    assert entries["h"].link_to == "g"
    assert content(fs, "g") == b"one"
    assert content(fs, "f") == b"two"


def test_hard_link_to_a_symlink_and_a_device(tmp_path: Path) -> None:
    fs = rootfs(
        tmp_path,
        [M("s", "symlink", target="t"), M("c", "char", major=1, minor=3), M("s2", "hardlink", target="s")],
        [M("c2", "hardlink", target="c")],
    )
    assert fs.nodes["s2"] is fs.nodes["s"]
    assert fs.nodes["c2"] is fs.nodes["c"]
    assert [e.kind for e in fs.entries()] == ["char", "hardlink", "symlink", "hardlink"]


def test_members_are_written_through_symlinked_parents(tmp_path: Path) -> None:
    fs = rootfs(
        tmp_path,
        [
            M("usr", "dir"),
            M("usr/lib", "dir"),
            M("lib", "symlink", target="usr/lib"),
            M("abs", "symlink", target="/usr"),
        ],
        [M("lib/a.so"), M("abs/lib/b.so"), M("abs/c", "hardlink", target="lib/b.so")],
        [M("lib/.wh.a.so")],
    )
    assert sorted(fs.nodes) == ["abs", "lib", "usr", "usr/c", "usr/lib", "usr/lib/b.so"]
    assert fs.nodes["usr/c"] is fs.nodes["usr/lib/b.so"]


def test_missing_parents_become_0755_dirs_and_replacements_clobber(tmp_path: Path) -> None:
    fs = rootfs(
        tmp_path,
        [
            M("a/b/c", data=b"deep"),
            M("d", "dir", mode=0o700),
            M("d/inner"),
            M("f", data=b"file"),
            M("l", "symlink", target="d"),
        ],
        [M("d", data=b"now a file"), M("f", "dir", mode=0o711), M("a", "dir", mode=0o750), M("l", "dir")],
    )
    got = listing(fs)
    assert got["a"] == ("dir", 0o750, "")
    assert got["a/b"] == ("dir", 0o755, "")
    assert got["f"] == ("dir", 0o711, "")
    assert got["l"] == ("dir", 0o644, "")
    assert got["d"][0] == "file"
    assert "d/inner" not in got
    assert content(fs, "a/b/c") == b"deep"


def test_modes_owners_and_special_files(tmp_path: Path) -> None:
    fs = rootfs(
        tmp_path,
        [
            M("tmp", "dir", mode=0o1777, uid=5, gid=6),
            M("su", data=b"x", mode=0o6755),
            M("null", "char", mode=0o666, major=1, minor=3),
            M("sda", "block", mode=0o660, major=8, minor=0),
            M("pipe", "fifo", mode=0o620),
        ],
    )
    assert listing(fs) == {
        "tmp": ("dir", 0o1777, ""),
        "su": ("file", 0o6755, "2d711642b726b04401627ca9fbac32f5c8530fb1903cc4db02258717921a4881"),
        "null": ("char", 0o666, "1:3"),
        "sda": ("block", 0o660, "8:0"),
        "pipe": ("fifo", 0o620, ""),
    }


def test_entries_are_sorted_bytewise_and_stream_from_the_layer(tmp_path: Path) -> None:
    big = os.urandom(3 << 20)
    fs = rootfs(tmp_path, [M("b", data=big), M("a", data=b"small"), M("é"), M("Z")])
    assert [e.path for e in fs.entries()] == ["Z", "a", "b", "é"]
    assert content(fs, "b") == big


def test_escapes() -> None:
    assert escapes(["a"], "../b") is False
    assert escapes(["a"], "../../b") is True
    assert escapes([], "/..") is True
    assert escapes(["a", "b"], "/x/../y") is False
    assert escapes([], "./x/./../..") is True


# -- unsafe layers -----------------------------------------------------------------------------------
L0 = "layer sha256:" + "0" * 64
L1 = "layer sha256:" + "0" * 63 + "1"


@pytest.mark.parametrize(
    ("layers", "message"),
    [
        (
            [[M("/etc/passwd")]],
            f"{L0}, member '/etc/passwd': absolute path '/etc/passwd': layer members must be relative to the rootfs",
        ),
        (
            [[M("../escape")]],
            f"{L0}, member '../escape': path '../escape' contains '..': it could reach outside the rootfs",
        ),
        (
            [[M("a/../../x")]],
            f"{L0}, member 'a/../../x': path 'a/../../x' contains '..': it could reach outside the rootfs",
        ),
        (
            [[M("evil", "symlink", target="../../etc")]],
            f"{L0}, member 'evil': symlink target '../../etc' points outside the rootfs",
        ),
        (
            [[M("d", "dir"), M("d/evil", "symlink", target="/../etc")]],
            f"{L0}, member 'd/evil': symlink target '/../etc' points outside the rootfs",
        ),
        (
            [
                [M("up", "symlink", target="."), M("a/b", "dir")],
                [M("up/a/b/evil", "symlink", target="../../..")],
            ],
            f"{L1}, member 'up/a/b/evil': symlink target '../../..' points outside the rootfs",
        ),
        (
            [[M("f"), M("h", "hardlink", target="../f")]],
            f"{L0}, member 'h': hard link target '../f' contains '..': it could reach outside the rootfs",
        ),
        (
            [[M("h", "hardlink", target="/etc/shadow")]],
            f"{L0}, member 'h': absolute hard link target '/etc/shadow': layer members must be relative to the rootfs",
        ),
        (
            [[M("h", "hardlink", target="nothing")]],
            f"{L0}, member 'h': hard link to 'nothing', which does not exist in this or a lower layer",
        ),
        ([[M("d", "dir"), M("h", "hardlink", target="d")]], f"{L0}, member 'h': hard link to directory 'd'"),
        (
            [[M("./", "symlink", target="/")]],
            f"{L0}, member './': refusing to change the type of the rootfs root directory",
        ),
        (
            [[M("a", "symlink", target="b"), M("b", "symlink", target="a"), M("a/x")]],
            f"{L0}, member 'a/x': too many levels of symbolic links resolving 'a'",
        ),
        ([[M("f"), M("f/x")]], f"{L0}, member 'f/x': parent 'f' is a file, not a directory"),
        ([[M("d", "dir"), M("d/.wh...")]], f"{L0}, member 'd/.wh...': malformed whiteout '.wh...'"),
        ([[M("s", "symlink")]], f"{L0}, member 's': symlink with an empty target"),
    ],
    ids=[
        "absolute",
        "dotdot",
        "dotdot-inside",
        "symlink-up",
        "symlink-abs-up",
        "symlink-up-from-real-place",
        "hardlink-dotdot",
        "hardlink-absolute",
        "hardlink-missing",
        "hardlink-dir",
        "root-type",
        "symlink-loop",
        "parent-file",
        "whiteout-dotdot",
        "symlink-empty",
    ],
)
def test_unsafe_layers_are_refused(tmp_path: Path, layers: list[list[M]], message: str) -> None:
    with pytest.raises(ArchiveError) as exc:
        rootfs(tmp_path, *layers)
    assert str(exc.value) == message


def test_sparse_and_corrupt_tars_are_refused(tmp_path: Path) -> None:
    info = tarfile.TarInfo("sparse")
    info.type = tarfile.GNUTYPE_SPARSE
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(info)
    (tmp_path / "sparse.tar").write_bytes(buf.getvalue())
    with pytest.raises(ArchiveError, match=r"member 'sparse': unsupported sparse file"):
        Rootfs([LayerFile("sha256:" + "a" * 64, tmp_path / "sparse.tar")])
    (tmp_path / "junk.tar").write_bytes(layer([M("x", data=b"y" * 2000)])[:700])
    with pytest.raises(ArchiveError, match=r"^layer sha256:b{64}: corrupt layer tar: "):
        Rootfs([LayerFile("sha256:" + "b" * 64, tmp_path / "junk.tar")])


def test_unpack_refuses_a_non_empty_target(tmp_path: Path) -> None:
    fs = rootfs(tmp_path, [M("x")])
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "old").write_bytes(b"")
    with pytest.raises(ArchiveError, match="unpack target is not empty"):
        fs.unpack(tmp_path / "out")


# -- oracles: umoci for the tree, GNU cpio for the ramdisk --------------------------------------------
@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_same_tree_as_umoci(tmp_path: Path, compression: str) -> None:
    umoci = require_tool("umoci")
    write_layout(tmp_path / "layout", [sample_image(compression=compression)], tag="v1")  # type: ignore[arg-type]
    subprocess.run(
        [
            umoci,
            "raw",
            "unpack",
            "--rootless",
            "--image",
            f"{tmp_path / 'layout'}:v1",
            str(tmp_path / "umoci"),
        ],
        check=True,
        capture_output=True,
    )
    store = Store(tmp_path / "store")
    image = resolve_image("layout:v1", arch="x86_64", store=store, project_dir=tmp_path)
    ours = model_listing(rootfs_entries(image, store))
    expected = tree_listing(tmp_path / "umoci")
    # umoci --rootless cannot mknod: it writes an empty file with the device's mode instead.
    devices = {p: v for p, v in ours.items() if v[0] in ("char", "block")}
    assert devices == {"dev/loop0": ("block", 0o660, "7:0"), "dev/null": ("char", 0o666, "1:3")}
    empty = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    ours.update({p: ("file", mode, empty) for p, (_, mode, _) in devices.items()})
    assert ours == expected
    unpack_image(image, store, tmp_path / "ours")
    assert (
        link_groups(tmp_path / "ours")
        == link_groups(tmp_path / "umoci")
        == {frozenset({"srv/data", "usr/lib/libc.so"})}
    )


def test_app_ramdisk_extracts_with_gnu_cpio_to_the_unpacked_tree(tmp_path: Path) -> None:
    gnu_cpio = require_tool("cpio")
    if os.geteuid() != 0:
        pytest.skip("extracting device nodes needs root")
    write_layout(tmp_path / "layout", [sample_image()], tag="v1")
    store = Store(tmp_path / "store")
    image = resolve_image("layout", arch="x86_64", store=store, project_dir=tmp_path)
    argv, env = app_command(image)
    entries = ramdisk.app_entries(rootfs_entries(image, store), argv, env, modes="preserve")
    archive = tmp_path / "app.cpio"
    cpio.write_cpio_file(entries, archive)
    (tmp_path / "x").mkdir()
    with open(archive, "rb") as fh:
        subprocess.run(
            [gnu_cpio, "-idm", "--quiet", "--no-preserve-owner"], stdin=fh, cwd=tmp_path / "x", check=True
        )
    unpack_image(image, store, tmp_path / "ours", preserve_special=True)
    extracted = tree_listing(tmp_path / "x" / "rootfs")
    added = {name: ("dir", 0o755, "") for name in ("proc", "sys", "var")}  # init.c's mount points
    assert extracted == {**tree_listing(tmp_path / "ours"), **added}
    assert link_groups(tmp_path / "x" / "rootfs") == {frozenset({"srv/data", "usr/lib/libc.so"})}
    assert (tmp_path / "x" / "cmd").read_bytes() == b"/bin/app\n--serve\n8080\n"
    assert (tmp_path / "x" / "env").read_bytes() == b"PATH=/usr/local/bin:/bin\nGREETING=hi there\n"


def test_unpack_never_writes_through_a_symlink_the_model_holds(tmp_path: Path) -> None:
    """Link-then-write: even a model with a path below a symlink (the applier never makes one) is
    written by the safe tree writer, which refuses to go through the link."""
    outside = tmp_path / "outside"
    outside.mkdir()
    fs = Rootfs([])
    fs.nodes["zz"] = Inode("symlink", 0o777, fs.new_ino(), target=str(outside))
    fs.nodes["zz/d"] = Inode("dir", 0o755, fs.new_ino())
    with pytest.raises(ArchiveError, match="parent 'zz' is a symlink"):
        fs.unpack(tmp_path / "out")
    assert list(outside.iterdir()) == []
