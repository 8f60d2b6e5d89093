"""NAR serialisation and hash encodings, checked against Nix itself (Debian's nix-bin)."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from conftest import require_tool
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from source_helpers import Entry, make_tar, make_zip

from eifbuild.errors import ArchiveError, ConfigError
from eifbuild.sources import nar
from eifbuild.sources.archive import nar_digest_of_archive


def _nix_hash(path: Path, *flags: str) -> str:
    nix_hash = require_tool("nix-hash")
    return subprocess.run(
        [nix_hash, "--type", "sha256", *flags, str(path)], check=True, capture_output=True, text=True
    ).stdout.strip()


def _nix_dump(path: Path) -> bytes:
    nix_store = require_tool("nix-store")
    return subprocess.run([nix_store, "--dump", str(path)], check=True, capture_output=True).stdout


def _sample_tree(root: Path) -> Path:
    """Symlinks (inside, dangling), executables, empty dirs and files, names that sort tricky."""
    root.mkdir()
    (root / "empty-dir").mkdir()
    (root / "sub" / "deeper").mkdir(parents=True)
    (root / "a").write_bytes(b"hello")
    (root / "a.b").write_bytes(b"dot")
    (root / "a-b").write_bytes(b"dash")
    (root / "B").write_bytes(b"upper")
    (root / "empty").write_bytes(b"")
    (root / "sub" / "run.sh").write_bytes(b"#!/bin/sh\necho 13 bytes\n")
    os.chmod(root / "sub" / "run.sh", 0o700)
    (root / "sub" / "deeper" / "eight-by").write_bytes(b"12345678")
    (root / "link").symlink_to("a")
    (root / "sub" / "up").symlink_to("../a")
    (root / "dangling").symlink_to("nowhere")
    (root / "ünïcode").write_bytes("é".encode())
    return root


def test_nix32_matches_nix() -> None:
    digest = hashlib.sha256(b"eifbuild").digest()
    expected = subprocess.run(
        [require_tool("nix-hash"), "--type", "sha256", "--to-base32", digest.hex()],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert nar.nix32_encode(digest) == expected
    assert nar.nix32_decode(expected, 32) == digest


def test_nix32_known_vector() -> None:
    # sha256 of the empty string, as Nix prints it.
    empty = hashlib.sha256(b"").digest()
    assert nar.nix32_encode(empty) == "0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73"


@given(st.binary(min_size=1, max_size=64))
def test_nix32_round_trip(data: bytes) -> None:
    assert nar.nix32_decode(nar.nix32_encode(data), len(data)) == data


def test_nix32_decode_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="invalid base32 character 'e'"):
        nar.nix32_decode("e" * 52, 32)
    with pytest.raises(ValueError, match="expected 52 base32 characters, got 3"):
        nar.nix32_decode("abc", 32)


def test_nar_bytes_equal_nix_store_dump(tmp_path: Path) -> None:
    root = _sample_tree(tmp_path / "tree")
    ours = b"".join(nar.serialise(nar.tree_of_path(root)))
    assert ours == _nix_dump(root)


def test_nar_hash_equals_nix_hash_in_every_encoding(tmp_path: Path) -> None:
    root = _sample_tree(tmp_path / "tree")
    digest = nar.nar_digest_of_path(root)
    assert digest.sha256 == _nix_hash(root)
    assert digest.nix32 == _nix_hash(root, "--base32")


def test_nar_of_single_file_and_symlink(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x" * 9)
    os.chmod(tmp_path / "f", 0o700)
    (tmp_path / "l").symlink_to("f")
    for path in (tmp_path / "f", tmp_path / "l"):
        assert b"".join(nar.serialise(nar.tree_of_path(path))) == _nix_dump(path)


def test_nix_hash_path_sri(tmp_path: Path) -> None:
    nix = require_tool("nix")
    root = _sample_tree(tmp_path / "tree")
    out = subprocess.run(
        [nix, "--extra-experimental-features", "nix-command", "hash", "path", str(root)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    assert nar.nar_digest_of_path(root).sri == out


@pytest.mark.parametrize("kind", ["tar.gz", "tar.xz", "tar.zst", "tar", "zip"])
def test_nar_of_archive_members_equals_nix_hash_of_the_tree(tmp_path: Path, kind: str) -> None:
    entries = [
        Entry("top/", dir=True),
        Entry("top/zz-empty/", dir=True),
        Entry("top/b/c/deep.txt", b"deep"),  # parents only implied
        Entry("top/run", b"#!/bin/sh\n", mode=0o700),
        Entry("top/a", b"aaa"),
        Entry("top/link", symlink="b/c/deep.txt"),
        Entry("top/b/up", symlink="../a"),
    ]
    if kind.startswith("tar"):
        entries.append(Entry("top/hard", hardlink="top/a"))
        archive = make_tar(tmp_path / "t", entries, compression=kind[4:])
    else:
        archive = make_zip(tmp_path / "t.zip", entries)
    tree = tmp_path / "ref"
    _sample_like(tree, with_hardlink=kind.startswith("tar"))
    assert nar_of_archive(archive, strip=1) == _nix_hash(tree)


def nar_of_archive(path: Path, *, strip: int) -> str:
    return nar_digest_of_archive(path, strip=strip).sha256


def _sample_like(root: Path, *, with_hardlink: bool) -> None:
    (root / "zz-empty").mkdir(parents=True)
    (root / "b" / "c").mkdir(parents=True)
    (root / "b" / "c" / "deep.txt").write_bytes(b"deep")
    (root / "run").write_bytes(b"#!/bin/sh\n")
    os.chmod(root / "run", 0o700)
    (root / "a").write_bytes(b"aaa")
    (root / "link").symlink_to("b/c/deep.txt")
    (root / "b" / "up").symlink_to("../a")
    if with_hardlink:
        (root / "hard").write_bytes(b"aaa")


def test_tree_of_path_rejects_special_files(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(ArchiveError, match="unsupported file type"):
        nar.nar_digest_of_path(tmp_path)


def test_parse_sri() -> None:
    digest = hashlib.sha512(b"x").digest()
    assert nar.parse_sri(nar.to_sri(digest, "sha512")) == ("sha512", digest.hex())
    with pytest.raises(ConfigError, match=r"expected an SRI hash 'sha256-<base64>', got 'md5-abc'"):
        nar.parse_sri("md5-abc", where="nar_hash", algorithms=("sha256",))
    with pytest.raises(ConfigError, match=r"'sha256-AAAA' is not a valid sha256 SRI hash"):
        nar.parse_sri("sha256-AAAA")


_names = st.text(alphabet="abcABC.-_é0", min_size=1, max_size=6).filter(lambda s: s not in {".", ".."})


@st.composite
def _trees(draw: st.DrawFn, depth: int = 0) -> dict[str, object]:
    names = draw(st.lists(_names, max_size=4, unique=True))
    tree: dict[str, object] = {}
    for name in names:
        kind = draw(st.sampled_from(["file", "exe", "link"] + (["dir"] if depth < 2 else [])))
        if kind == "dir":
            tree[name] = draw(_trees(depth + 1))
        elif kind == "link":
            tree[name] = ("link", draw(_names))
        else:
            tree[name] = (kind, draw(st.binary(max_size=20)))
    return tree


def _materialise(root: Path, tree: dict[str, object]) -> None:
    root.mkdir()
    for name, value in tree.items():
        if isinstance(value, dict):
            _materialise(root / name, value)
            continue
        assert isinstance(value, tuple)
        kind, payload = value
        if kind == "link":
            (root / name).symlink_to(payload)
        else:
            (root / name).write_bytes(payload)
            os.chmod(root / name, 0o755 if kind == "exe" else 0o644)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tree=_trees())
def test_random_trees_match_nix_store_dump(
    tmp_path_factory: pytest.TempPathFactory, tree: dict[str, object]
) -> None:
    root = tmp_path_factory.mktemp("nar") / "root"
    _materialise(root, tree)
    assert b"".join(nar.serialise(nar.tree_of_path(root))) == _nix_dump(root)


def test_git_archive_tarball_like_githubs(tmp_path: Path) -> None:
    """GitHub's /archive/ tarballs come from `git archive` (with a pax global header)."""
    git = require_tool("git")
    repo = _sample_tree(tmp_path / "repo")
    (repo / "empty-dir").rmdir()  # git keeps no empty directories
    (repo / "empty").write_bytes(b"now tracked")
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t"}
    env |= {"GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    for args in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "x"]):
        subprocess.run([git, *args], cwd=repo, env=env, check=True, capture_output=True)
    tarball = tmp_path / "v1.tar.gz"
    with open(tarball, "wb") as fh:
        subprocess.run(
            [git, "archive", "--format=tar.gz", "--prefix=repo-1.0/", "HEAD"], stdout=fh, cwd=repo, check=True
        )
    ref = tmp_path / "ref"
    (repo / ".git").rename(tmp_path / "dot-git")
    repo.rename(ref)
    assert nar_digest_of_archive(tarball, strip=1).sha256 == _nix_hash(ref)
