"""Nix archives (NAR): the canonical serialisation of a file tree, and the hash encodings Nix uses.

A NAR holds only what Nix considers content: file bytes, the executable bit, symlink targets and
directory entries sorted by name (byte order). The NAR hash of a tree is sha256 over its NAR; Nix
prints it in its own base32 alphabet (``nix-hash --type sha256 --base32``) or as SRI
(``sha256-<base64>``, ``nix hash path``). Pins published in Nix flakes use these.

The serialiser is pure: it walks an in-memory :data:`NarNode` tree whose regular files open their
content lazily, so the same code hashes an archive's members (spooled contents) and a directory.
"""

from __future__ import annotations

import base64
import os
import stat
from dataclasses import dataclass, field
from typing import IO, TYPE_CHECKING, Final, TypeAlias

from ..errors import ArchiveError, ConfigError
from ..util.fsutil import CHUNK, StreamHasher

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

MAGIC: Final = "nix-archive-1"
NIX32_ALPHABET: Final = "0123456789abcdfghijklmnpqrsvwxyz"  # no e, o, u, t


@dataclass(frozen=True)
class Regular:
    """A regular file: size, executable bit and a callable opening its content."""

    size: int
    executable: bool
    open: Callable[[], IO[bytes]] = field(compare=False, repr=False)


@dataclass(frozen=True)
class Symlink:
    target: str


@dataclass
class Directory:
    """Entries by name; names are plain path components (no ``/``, not ``.``/``..``/empty)."""

    entries: dict[str, NarNode] = field(default_factory=dict)


NarNode: TypeAlias = Regular | Symlink | Directory


# -- serialisation -------------------------------------------------------------------------------
def _str(data: bytes) -> bytes:
    pad = -len(data) % 8
    return len(data).to_bytes(8, "little") + data + b"\0" * pad


def _bytes(text: str) -> bytes:
    # Names that are not UTF-8 arrive surrogate-escaped (os.listdir, tarfile); give back their bytes.
    return text.encode("utf-8", "surrogateescape")


def _sorted_entries(directory: Directory) -> list[tuple[bytes, NarNode]]:
    return sorted(((_bytes(name), node) for name, node in directory.entries.items()), key=lambda e: e[0])


def serialise(root: NarNode) -> Iterator[bytes]:
    """Yield the NAR of ``root`` in chunks (file contents are streamed, never held whole)."""
    yield _str(MAGIC.encode())
    yield from _node(root)


def _node(node: NarNode) -> Iterator[bytes]:
    yield _str(b"(")
    if isinstance(node, Regular):
        yield _str(b"type") + _str(b"regular")
        if node.executable:
            yield _str(b"executable") + _str(b"")
        yield _str(b"contents") + node.size.to_bytes(8, "little")
        yield from _contents(node)
        yield b"\0" * (-node.size % 8)
    elif isinstance(node, Symlink):
        yield _str(b"type") + _str(b"symlink") + _str(b"target") + _str(_bytes(node.target))
    else:
        yield _str(b"type") + _str(b"directory")
        for name, child in _sorted_entries(node):
            yield _str(b"entry") + _str(b"(") + _str(b"name") + _str(name) + _str(b"node")
            yield from _node(child)
            yield _str(b")")
    yield _str(b")")


def _contents(node: Regular) -> Iterator[bytes]:
    left = node.size
    with node.open() as fh:
        while left:
            chunk = fh.read(min(CHUNK, left))
            if not chunk:
                msg = f"file content ended {left} bytes early while writing the NAR"
                raise ArchiveError(msg)
            left -= len(chunk)
            yield chunk


@dataclass(frozen=True)
class NarDigest:
    """sha256 of a NAR and its length."""

    sha256: str  # hex
    size: int

    @property
    def sri(self) -> str:
        return to_sri(bytes.fromhex(self.sha256))

    @property
    def nix32(self) -> str:
        return nix32_encode(bytes.fromhex(self.sha256))


def nar_digest(root: NarNode) -> NarDigest:
    hasher = StreamHasher()
    for chunk in serialise(root):
        hasher.update(chunk)
    return NarDigest(hasher.hexdigest(), hasher.size)


# -- trees from a directory ----------------------------------------------------------------------
def file_opener(path: str | os.PathLike[str]) -> Callable[[], IO[bytes]]:
    """Opens ``path`` when the serialiser reaches it (which closes it): no descriptor held before."""
    return lambda: open(path, "rb")


def tree_of_path(path: str | os.PathLike[str]) -> NarNode:
    """The NAR tree of a file, symlink or directory on disk (executable = owner x bit, like Nix)."""
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        return Symlink(os.readlink(path))
    if stat.S_ISREG(st.st_mode):
        return Regular(st.st_size, bool(st.st_mode & stat.S_IXUSR), file_opener(path))
    if stat.S_ISDIR(st.st_mode):
        with os.scandir(path) as it:
            names = sorted(e.name for e in it)
        return Directory({name: tree_of_path(os.path.join(path, name)) for name in names})
    msg = "unsupported file type (only files, directories and symlinks can be hashed)"
    raise ArchiveError(msg, path=os.fspath(path))


def nar_digest_of_path(path: Path | str) -> NarDigest:
    return nar_digest(tree_of_path(path))


# -- hash encodings ------------------------------------------------------------------------------
def nix32_encode(digest: bytes) -> str:
    """Nix's base32: its own alphabet, read from the last 5-bit group to the first."""
    length = (len(digest) * 8 - 1) // 5 + 1
    out = []
    for n in range(length - 1, -1, -1):
        bit = n * 5
        i, j = divmod(bit, 8)
        c = digest[i] >> j
        if i + 1 < len(digest):
            c |= digest[i + 1] << (8 - j)
        out.append(NIX32_ALPHABET[c & 0x1F])
    return "".join(out)


def nix32_decode(text: str, size: int) -> bytes:
    """Inverse of :func:`nix32_encode` for a digest of ``size`` bytes; ValueError when malformed."""
    if len(text) != (size * 8 - 1) // 5 + 1:
        msg = f"expected {(size * 8 - 1) // 5 + 1} base32 characters, got {len(text)}"
        raise ValueError(msg)
    out = bytearray(size)
    for n, char in enumerate(reversed(text)):
        digit = NIX32_ALPHABET.find(char)
        if digit < 0:
            msg = f"invalid base32 character {char!r}"
            raise ValueError(msg)
        bit = n * 5
        i, j = divmod(bit, 8)
        out[i] |= (digit << j) & 0xFF
        carry = digit >> (8 - j)
        if i + 1 < size:
            out[i + 1] |= carry
        elif carry:
            msg = "base32 value does not fit the digest size"
            raise ValueError(msg)
    return bytes(out)


SRI_SIZES: Final = {"sha256": 32, "sha384": 48, "sha512": 64}


def to_sri(digest: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}-{base64.b64encode(digest).decode()}"


def parse_sri(
    text: str, *, where: str = "hash", algorithms: tuple[str, ...] = tuple(SRI_SIZES)
) -> tuple[str, str]:
    """``sha256-<base64>`` (or sha384/sha512) → (algorithm, hex digest); ConfigError otherwise."""
    algorithm, sep, b64 = text.partition("-")
    if not sep or algorithm not in algorithms:
        msg = f"expected an SRI hash '{algorithms[0]}-<base64>', got {text!r}"
        raise ConfigError(msg, key=where)
    try:
        digest = base64.b64decode(b64, validate=True)
    except ValueError:
        digest = b""
    if len(digest) != SRI_SIZES[algorithm]:
        msg = f"{text!r} is not a valid {algorithm} SRI hash ({SRI_SIZES[algorithm]} bytes in base64)"
        raise ConfigError(msg, key=where)
    return algorithm, digest.hex()
