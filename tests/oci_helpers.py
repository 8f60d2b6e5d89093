"""Test images built by the tests themselves: tar layers, OCI layouts, archives (no binary blobs).

:func:`layer` makes a deterministic tar from :class:`M` member specs (whiteouts, opaque dirs, hard
links, symlinks, setuid, device nodes, fifos are all just specs); :func:`write_layout` writes an
OCI image layout with one or more images (single manifests or multi-arch indexes).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

if sys.version_info >= (3, 14):
    from compression import zstd
else:
    import zstandard

Compression = Literal["none", "gzip", "zstd"]

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TYPES = {
    "none": "application/vnd.oci.image.layer.v1.tar",
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}


@dataclass(frozen=True)
class M:
    """One tar member: kind file/dir/symlink/hardlink/char/block/fifo."""

    name: str
    kind: str = "file"
    data: bytes = b""
    mode: int = 0o644
    target: str = ""  # symlink target or hard link name
    major: int = 0
    minor: int = 0
    uid: int = 1000
    gid: int = 1000


_TYPES = {
    "file": tarfile.REGTYPE,
    "dir": tarfile.DIRTYPE,
    "symlink": tarfile.SYMTYPE,
    "hardlink": tarfile.LNKTYPE,
    "char": tarfile.CHRTYPE,
    "block": tarfile.BLKTYPE,
    "fifo": tarfile.FIFOTYPE,
}


def layer(members: list[M]) -> bytes:
    """An uncompressed PAX tar of ``members`` in the given order (mtime 1, owners 1000)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for m in members:
            info = tarfile.TarInfo(m.name)
            info.type = _TYPES[m.kind]
            info.mode = m.mode
            info.mtime = 1
            info.uid, info.gid = m.uid, m.gid
            info.uname = info.gname = "user"
            info.linkname = m.target
            info.devmajor, info.devminor = m.major, m.minor
            if m.kind == "file":
                info.size = len(m.data)
                tar.addfile(info, io.BytesIO(m.data))
            else:
                tar.addfile(info)
    return buf.getvalue()


def compress(data: bytes, how: Compression) -> bytes:
    if how == "gzip":
        return gzip.compress(data, mtime=0)
    if how == "zstd":
        if sys.version_info >= (3, 14):
            return zstd.compress(data)
        return zstandard.ZstdCompressor().compress(data)
    return data


def sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def jbytes(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, indent=1).encode()


@dataclass
class Image:
    """One platform image: layers (member lists) plus config fields."""

    layers: list[list[M]]
    arch: str = "amd64"
    os: str = "linux"
    variant: str = ""
    compression: Compression = "gzip"
    config: dict[str, Any] = field(
        default_factory=lambda: {"Entrypoint": ["/bin/app"], "Cmd": ["--serve"], "Env": ["PATH=/bin", "A=1"]}
    )


@dataclass
class Built:
    """Digests of what :func:`write_layout` wrote for one image (or index)."""

    digest: str  # the top descriptor's digest (manifest or index)
    media_type: str
    manifests: dict[str, str] = field(default_factory=dict)  # arch -> manifest digest
    layer_digests: list[str] = field(default_factory=list)


class Layout:
    """An OCI image layout directory being written."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self.index: list[dict[str, Any]] = []

    def blob(self, data: bytes) -> str:
        digest = sha(data)
        (self.root / "blobs" / "sha256" / digest[7:]).write_bytes(data)
        return digest

    def descriptor(self, media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
        return {"mediaType": media_type, "digest": self.blob(data), "size": len(data), **extra}

    def image(self, img: Image) -> tuple[dict[str, Any], list[str]]:
        raws = [layer(members) for members in img.layers]
        blobs = [compress(raw, img.compression) for raw in raws]
        platform = {"architecture": img.arch, "os": img.os}
        if img.variant:
            platform["variant"] = img.variant
        config = {
            **platform,
            "config": img.config,
            "rootfs": {"type": "layers", "diff_ids": [sha(r) for r in raws]},
        }
        layer_descs = [self.descriptor(LAYER_TYPES[img.compression], b) for b in blobs]
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": self.descriptor(OCI_CONFIG, jbytes(config)),
            "layers": layer_descs,
        }
        desc = self.descriptor(OCI_MANIFEST, jbytes(manifest), platform=platform)
        return desc, [d["digest"] for d in layer_descs]

    def add(self, images: list[Image], *, tag: str | None = None, as_index: bool | None = None) -> Built:
        """Add one image (a manifest) or several (an index) to index.json, tagged ``tag``."""
        annotations = {"org.opencontainers.image.ref.name": tag} if tag else {}
        descs = [self.image(img) for img in images]
        if len(images) == 1 and not as_index:
            desc, layers = descs[0]
            top = {k: v for k, v in desc.items() if k != "platform"}
            built = Built(desc["digest"], OCI_MANIFEST, {images[0].arch: desc["digest"]}, layers)
        else:
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [d for d, _ in descs]}
            top = self.descriptor(OCI_INDEX, jbytes(index))
            built = Built(
                top["digest"],
                OCI_INDEX,
                {img.arch: d["digest"] for img, (d, _) in zip(images, descs, strict=True)},
                [x for _, ls in descs for x in ls],
            )
        if annotations:
            top["annotations"] = annotations
        self.index.append(top)
        self.write_index()
        return built

    def write_index(self) -> None:
        index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": self.index}
        (self.root / "index.json").write_bytes(jbytes(index))


def write_layout(
    root: Path, images: list[Image], *, tag: str | None = "v1", as_index: bool | None = None
) -> Built:
    return Layout(root).add(images, tag=tag, as_index=as_index)


def write_docker_save(out: Path, img: Image, tags: list[str] | None = None) -> Path:
    """A legacy ``docker save`` archive: manifest.json, <config sha>.json, <id>/layer.tar (plain tars)."""
    raws = [layer(members) for members in img.layers]
    config = jbytes(
        {
            "architecture": img.arch,
            "os": img.os,
            "config": img.config,
            "rootfs": {"type": "layers", "diff_ids": [sha(r) for r in raws]},
        }
    )
    config_name = sha(config)[7:] + ".json"
    layer_names = [f"{hashlib.sha256(str(i).encode()).hexdigest()}/layer.tar" for i in range(len(raws))]
    manifest = [{"Config": config_name, "RepoTags": tags or ["test/img:v1"], "Layers": layer_names}]
    with tarfile.open(out, "w") as tar:
        for name, data in [
            (config_name, config),
            *zip(layer_names, raws, strict=True),
            ("manifest.json", jbytes(manifest)),
        ]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def tar_dir(src: Path, out: Path) -> Path:
    """A plain tar of a directory's contents (how an OCI archive is made)."""
    with tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as tar:
        for path in sorted(src.rglob("*")):
            tar.add(path, arcname=path.relative_to(src).as_posix(), recursive=False)
    return out


# The image most tests use: three layers exercising every rule of layer application.
BASE = [
    M("bin", "dir", mode=0o755),
    M("bin/app", data=b"#!/bin/sh\necho app\n", mode=0o755),
    M("bin/su", data=b"setuid binary", mode=0o4755),
    M("bin/sh-link", "hardlink", target="bin/app"),
    M("etc", "dir", mode=0o755),
    M("etc/passwd", data=b"root:x:0:0::/root:/bin/sh\n"),
    M("etc/gone", data=b"removed by a whiteout"),
    M("etc/dir-gone", "dir", mode=0o700),
    M("etc/dir-gone/inner", data=b"inner"),
    M("opt", "dir", mode=0o755),
    M("opt/old1", data=b"old one"),
    M("opt/sub", "dir", mode=0o755),
    M("opt/sub/old2", data=b"old two"),
    M("tmp", "dir", mode=0o1777),
    M("dev", "dir", mode=0o755),
    M("dev/null", "char", mode=0o666, major=1, minor=3),
    M("dev/loop0", "block", mode=0o660, major=7, minor=0),
    M("run", "dir", mode=0o755),
    M("run/fifo", "fifo", mode=0o600),
    M("usr", "dir", mode=0o755),
    M("usr/lib", "dir", mode=0o755),
    M("lib", "symlink", target="usr/lib"),
    M("usr/lib/libc.so", data=b"\x7fELF fake libc", mode=0o755),
]
MIDDLE = [
    M("etc", "dir", mode=0o755),
    M("etc/.wh.gone"),
    M("etc/.wh.dir-gone"),
    M("opt", "dir", mode=0o755),
    M("opt/new", data=b"added in layer 2"),
    M("opt/.wh..wh..opq"),
    M("lib/libextra.so", data=b"written through the lib symlink", mode=0o755),
    M("bin/app", data=b"#!/bin/sh\necho app v2\n", mode=0o755),
    M("abs-link", "symlink", target="/usr/lib/libc.so"),
    M("dangling", "symlink", target="nowhere/at/all"),
]
TOP = [
    M("etc", "dir", mode=0o750),
    M("etc/motd", data=b"hello " * 1000),
    M("empty", data=b""),
    M("srv", "dir", mode=0o2775),
    M("srv/data", "hardlink", target="usr/lib/libc.so"),
]
CONFIG = {
    "Entrypoint": ["/bin/app"],
    "Cmd": ["--serve", "8080"],
    "Env": ["PATH=/usr/local/bin:/bin", "GREETING=hi there"],
    "WorkingDir": "/srv",
}


def sample_image(arch: str = "amd64", compression: Compression = "gzip") -> Image:
    return Image([BASE, MIDDLE, TOP], arch=arch, compression=compression, config=dict(CONFIG))


def tree_listing(root: Path) -> dict[str, tuple[str, int, str]]:
    """path → (type, mode, link target / sha256 of content / major:minor) of a tree (lstat, no follow)."""
    out: dict[str, tuple[str, int, str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("symlink", 0o777, os.readlink(full))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", mode, "")
            elif stat.S_ISREG(st.st_mode):
                out[rel] = ("file", mode, hashlib.sha256(full.read_bytes()).hexdigest())
            elif stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
                kind = "char" if stat.S_ISCHR(st.st_mode) else "block"
                out[rel] = (kind, mode, f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}")
            elif stat.S_ISFIFO(st.st_mode):
                out[rel] = ("fifo", mode, "")
    return out


def link_groups(root: Path) -> set[frozenset[str]]:
    """Sets of paths sharing an inode (only groups of two or more)."""
    groups: dict[int, set[str]] = {}
    for path in root.rglob("*"):
        st = path.lstat()
        if not stat.S_ISDIR(st.st_mode):
            groups.setdefault(st.st_ino, set()).add(path.relative_to(root).as_posix())
    return {frozenset(g) for g in groups.values() if len(g) > 1}


def model_listing(entries: list[Any]) -> dict[str, tuple[str, int, str]]:
    """The same listing as :func:`tree_listing`, from cpio entries (hard links resolved)."""
    by_path = {e.path: e for e in entries}
    out: dict[str, tuple[str, int, str]] = {}
    for e in entries:
        real = by_path[e.link_to] if e.kind == "hardlink" else e
        if real.kind == "file":
            stream = real.source()
            try:
                content = hashlib.sha256(stream.read()).hexdigest()
            finally:
                stream.close()
            out[e.path] = ("file", real.mode, content)
        elif real.kind == "symlink":
            out[e.path] = ("symlink", 0o777, real.target)
        elif real.kind in ("char", "block"):
            out[e.path] = (real.kind, real.mode, f"{real.rdev_major}:{real.rdev_minor}")
        else:
            out[e.path] = (real.kind, real.mode, "")
    return out
