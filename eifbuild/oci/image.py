"""OCI images as the app input, without a Docker daemon.

A reference (``app.oci`` in eif.toml) is one of:

- a registry image pinned by digest: ``host[:port]/repo@sha256:…`` (a tag alone is refused in
  builds: ``eifbuild lock`` resolves it with :func:`resolve_tag`);
- an OCI image layout directory, optionally ``PATH:TAG`` or ``PATH@sha256:…`` to pick an image;
- an OCI archive (a tar of a layout) or a ``docker save`` archive, with the same selectors.

Local paths win over registry names. :func:`resolve_image` walks index → the manifest of the EIF's
platform (linux/amd64 for x86_64, linux/arm64 for aarch64) → config → layers, verifying every blob
against its digest while it streams, and keeps them in the store: JSON blobs as ``oci-blob``
entries, each layer *decompressed* as an ``oci-layer`` entry (``layer.tar``, keyed by the layer's
blob digest and diff_id, shared by every image that uses it; its diff_id is checked too). A
registry image's blobs the store lacks are asked of its substituter (the remote cache) first.
Everything an import fetches from the image's source is staged first and committed only once all
of it verified and the merged rootfs passed the layer-safety rules, so a bad image leaves nothing
of its own in the store. With everything in the store (or in the remote cache) and a digest-pinned
reference, resolving never contacts the registry.

Why decompressed layers: the cpio writer emits files in sorted path order, which jumps between
layers and around inside each; an uncompressed tar can be read at any offset, so every file is
streamed straight from its layer (see :mod:`eifbuild.oci._layers`) with each layer decompressed once,
ever, instead of once per file or held in memory.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final

from .. import log
from ..arch import ARCHES
from ..arch import info as arch_info
from ..errors import ArchiveError, ConfigError, FileAccessError, InputError, StoreError
from ..sources import LOCK_COMMAND
from ..store import Store, canonical_json
from ..util.bounded import decode_json
from ._importer import Descriptor, Importer, Layer, blob_step, descriptor, descriptors, layer_step
from ._layers import LayerFile, Rootfs, Unpacked
from ._registry import (
    DIGEST_RE,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    RegistryRef,
    check_digest,
    parse_ref,
)
from ._registry import resolve_tag as _resolve_registry_tag
from ._transport import REF_NAME, ImageArchive, ImageSource, ImageSourceKind, LayoutDir, RegistrySource

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from ..arch import Arch
    from ..ramdisk import Entry

MODEL_VERSION: Final = 1  # bump when the layer-application rules change the rootfs
INDEX_TYPES: Final = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES: Final = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
LAYER_TYPES: Final = frozenset(
    {
        "application/vnd.oci.image.layer.v1.tar",
        "application/vnd.oci.image.layer.v1.tar+gzip",
        "application/vnd.oci.image.layer.v1.tar+zstd",
        "application/vnd.oci.image.layer.nondistributable.v1.tar",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
        "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
        "application/vnd.docker.image.rootfs.diff.tar.gzip",
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
    }
)
CONTAINERD_NAME: Final = "io.containerd.image.name"  # docker save ≥ 25 names images this way too
_MAX_DEPTH: Final = 4  # index → index → … → manifest
_ROOT_USERS: Final = frozenset({"", "0", "root", "0:0", "root:root", "root:0", "0:root"})


# -- records -----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class LocalRef:
    path: Path
    tag: str | None = None
    digest: str | None = None


@dataclass(frozen=True)
class OciImage:
    """One platform image, resolved and verified; its layers are in the store."""

    ref: str
    source: ImageSourceKind
    arch: Arch
    platform: str
    index_digest: str | None
    manifest_digest: str
    config_digest: str
    layers: tuple[Layer, ...]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[str, ...]
    working_dir: str = ""
    user: str = ""

    @property
    def argv(self) -> tuple[str, ...]:
        """Entrypoint + Cmd, combined as the OCI spec (and Docker) do."""
        return self.entrypoint + self.cmd

    def store_keys(self) -> set[str]:
        """Keys of the store entries this image uses (index, manifest, config, layers): gc roots."""
        blobs = [d for d in (self.index_digest, self.manifest_digest, self.config_digest) if d]
        return {blob_step(d).key for d in blobs} | {layer_step(layer).key for layer in self.layers}

    @property
    def rootfs_digest(self) -> str:
        """Identifies the merged rootfs: the same for an image pulled, laid out or saved."""
        doc = {"model": MODEL_VERSION, "diff_ids": [layer.diff_id for layer in self.layers]}
        return "sha256:" + hashlib.sha256(canonical_json(doc)).hexdigest()

    @property
    def unsupported(self) -> tuple[str, ...]:
        notes = []
        if self.working_dir not in ("", "/"):
            notes.append(f"WorkingDir {self.working_dir!r} is ignored: AWS's init starts the command in /")
        if self.user not in _ROOT_USERS:
            notes.append(f"User {self.user!r} is ignored: AWS's init runs the command as root")
        return tuple(notes)

    def describe(self) -> dict[str, Any]:
        return {
            "ref": self.ref,
            "source": self.source,
            "platform": self.platform,
            "index": self.index_digest,
            "manifest": self.manifest_digest,
            "config": self.config_digest,
            "rootfs": self.rootfs_digest,
            "layers": [
                {"digest": x.digest, "diff_id": x.diff_id, "size": x.size, "media_type": x.media_type}
                for x in self.layers
            ],
            "entrypoint": list(self.entrypoint),
            "cmd": list(self.cmd),
            "argv": list(self.argv),
            "env": list(self.env),
            "working_dir": self.working_dir,
            "user": self.user,
            "unsupported": list(self.unsupported),
        }


def _local_ref(text: str, project_dir: Path) -> LocalRef | None:
    def where(part: str) -> Path:
        path = Path(part).expanduser()
        return path if path.is_absolute() else project_dir / path

    base, at, digest = text.rpartition("@")
    if at and base and where(base).exists():
        return LocalRef(where(base), digest=check_digest(digest, text))
    if where(text).exists():
        return LocalRef(where(text))
    for i, char in enumerate(text):
        if char == ":" and i and where(text[:i]).exists():
            return LocalRef(where(text[:i]), tag=text[i + 1 :] or None)
    return None


def parse_image_ref(text: str, project_dir: Path) -> LocalRef | RegistryRef:
    """A local layout/archive (existing path, optional ``:TAG``/``@DIGEST``) or a registry reference."""
    text = text.strip()
    if text.startswith("docker://"):
        return parse_ref(text.removeprefix("docker://"))
    local = _local_ref(text, project_dir)
    if local is not None:
        return local
    if text.startswith(("/", "./", "../", "~")) or text.endswith(".tar"):
        msg = f"image {text!r}: no such file or directory (relative paths start at {project_dir})"
        raise FileAccessError(msg)
    return parse_ref(text)


@contextlib.contextmanager
def _open_source(ref: LocalRef | RegistryRef) -> Iterator[ImageSource]:
    source: ImageSource
    if isinstance(ref, RegistryRef):
        source = RegistrySource(ref)
    elif ref.path.is_dir():
        source = LayoutDir(ref.path)
    else:
        source = ImageArchive(ref.path)
    try:
        yield source
    finally:
        source.close()


# -- index / manifest / config -----------------------------------------------------------------------
def _is_index(doc: Mapping[str, Any], desc: Descriptor, where: str) -> bool:
    if doc.get("schemaVersion") == 1:
        msg = f"{where}: Docker schema 1 manifests are not supported (re-push the image with a current tool)"
        raise ArchiveError(msg)
    media_type = doc.get("mediaType") or desc.media_type
    if media_type in INDEX_TYPES or (not media_type and "manifests" in doc):
        return True
    if media_type in MANIFEST_TYPES or (not media_type and "layers" in doc):
        return False
    msg = f"{where}: not an image index or manifest (media type {media_type!r})"
    raise ArchiveError(msg)


def wanted_platform(arch: Arch) -> str:
    return f"linux/{arch_info(arch).oci_arch}"


def _platform_matches(platform: str, arch: Arch) -> bool:
    wanted = wanted_platform(arch)
    return platform == wanted or (arch == "aarch64" and platform == f"{wanted}/v8")


def _choose(descs: Sequence[Descriptor], arch: Arch, where: str) -> Descriptor:
    for desc in descs:
        if _platform_matches(desc.platform, arch):
            return desc
    have = ", ".join(sorted({d.platform or "unknown" for d in descs})) or "nothing"
    msg = f"{where}: no {wanted_platform(arch)} image for arch {arch} (the index has: {have})"
    raise ArchiveError(msg)


def _descend(imp: Importer, desc: Descriptor, arch: Arch, depth: int = 0) -> tuple[str | None, Descriptor]:
    """Follow indexes down to the manifest for ``arch``; return (top index digest, manifest)."""
    where = f"{imp.source.where}: {desc.digest}"
    doc = imp.json(desc, manifest=True, what="index/manifest")
    if not _is_index(doc, desc, where):
        return None, desc
    if depth >= _MAX_DEPTH:
        msg = f"{where}: indexes nested more than {_MAX_DEPTH} deep"
        raise ArchiveError(msg)
    chosen = _choose(descriptors(doc, "manifests", where), arch, where)
    _, manifest = _descend(imp, chosen, arch, depth + 1)
    return desc.digest, manifest


def _tags(descs: Sequence[Descriptor]) -> str:
    return ", ".join(sorted({d.annotations.get(REF_NAME, "") for d in descs} - {""})) or "none"


def _tag_matches(desc: Descriptor, tag: str) -> bool:
    """``tag`` is the image's ref.name, or its full name (docker save) with or without docker.io/."""
    names = {desc.annotations.get(REF_NAME, ""), desc.annotations.get(CONTAINERD_NAME, "")} - {""}
    shorts = {n.removeprefix("docker.io/").removeprefix("library/") for n in names}
    return tag in names | shorts


def _pick_local(imp: Importer, ref: LocalRef, arch: Arch) -> tuple[str | None, Descriptor]:
    where = f"{imp.source.where} index"
    try:
        index = decode_json(imp.source.index())
    except ValueError as exc:
        msg = f"index is not valid JSON: {exc}"
        raise ArchiveError(msg, path=imp.source.where) from None
    if not isinstance(index, dict):
        msg = "index: expected a JSON object"
        raise ArchiveError(msg, path=imp.source.where)
    candidates = descriptors(index, "manifests", where)
    if ref.digest is not None:
        found = [d for d in candidates if d.digest == ref.digest] or [Descriptor("", ref.digest)]
    elif ref.tag is not None:
        found = [d for d in candidates if _tag_matches(d, ref.tag)]
        if not found:
            msg = f"no image tagged {ref.tag!r} (tags: {_tags(candidates)})"
            raise InputError(msg, path=imp.source.where)
    else:
        found = candidates
    if len(found) == 1:
        return _descend(imp, found[0], arch)
    if found and all(d.platform for d in found):
        return _descend(imp, _choose(found, arch, where), arch)
    msg = (
        f"holds {len(found)} images: pick one as PATH:TAG or PATH@sha256:… (tags: {_tags(found)})"
        if found
        else "holds no image"
    )
    raise InputError(msg, path=imp.source.where)


def _strings(config: Mapping[str, Any], key: str, where: str) -> tuple[str, ...]:
    value = config.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        msg = f"{where}: config.{key} must be a list of strings"
        raise ArchiveError(msg)
    return tuple(value)


def _env(config: Mapping[str, Any], where: str) -> tuple[str, ...]:
    env = []
    for item in _strings(config, "Env", where):
        if "=" not in item or item.startswith("="):
            log.warn(f"{where}: Env entry {item!r} is not KEY=value: dropped")
            continue
        env.append(item)
    return tuple(env)


def _load(imp: Importer, ref: str, arch: Arch, index: str | None, manifest: Descriptor) -> OciImage:
    where = f"{imp.source.where}: manifest {manifest.digest}"
    doc = imp.json(manifest, manifest=True, what="manifest")
    config_desc = descriptor(doc.get("config"), f"{where} config")
    config = imp.json(config_desc, manifest=False, what="config")
    platform = "/".join(str(config.get(k) or "") for k in ("os", "architecture", "variant")).rstrip("/")
    if not _platform_matches(platform, arch):
        have = platform or "an unknown platform"
        msg = f"{where}: the image is for {have}, but arch {arch} needs {wanted_platform(arch)}"
        raise ArchiveError(msg)
    diff_ids = config.get("rootfs", {}).get("diff_ids") if isinstance(config.get("rootfs"), dict) else None
    descs = descriptors(doc, "layers", where)
    if not isinstance(diff_ids, list) or len(diff_ids) != len(descs):
        count = len(diff_ids) if isinstance(diff_ids, list) else 0
        msg = f"{where}: {len(descs)} layers but config {config_desc.digest} lists {count} diff_ids"
        raise ArchiveError(msg)
    layers = []
    for i, (desc, diff_id) in enumerate(zip(descs, diff_ids, strict=True)):
        if desc.media_type not in LAYER_TYPES:
            msg = f"{where}: layer {i} has media type {desc.media_type!r}: not a container image layer"
            raise ArchiveError(msg)
        if not isinstance(diff_id, str) or not DIGEST_RE.fullmatch(diff_id):
            msg = f"{where}: config diff_ids[{i}] is not a digest: {diff_id!r}"
            raise ArchiveError(msg)
        layers.append(Layer(desc.digest, diff_id, desc.size, desc.media_type))
    settings = config.get("config") or {}
    if not isinstance(settings, dict):
        msg = f"config {config_desc.digest}: 'config' must be an object"
        raise ArchiveError(msg, path=imp.source.where)
    cwhere = f"{imp.source.where}: config {config_desc.digest}"
    return OciImage(
        ref=ref,
        source=imp.source.kind,
        arch=arch,
        platform=platform,
        index_digest=index,
        manifest_digest=manifest.digest,
        config_digest=config_desc.digest,
        layers=tuple(layers),
        entrypoint=_strings(settings, "Entrypoint", cwhere),
        cmd=_strings(settings, "Cmd", cwhere),
        env=_env(settings, cwhere),
        working_dir=str(settings.get("WorkingDir") or ""),
        user=str(settings.get("User") or ""),
    )


def _config(imp: Importer, ref: str, parsed: LocalRef | RegistryRef, arch: Arch) -> OciImage:
    """Index → manifest → config of ``arch`` through ``imp`` (what was not in the store yet is
    staged in ``imp``): the image, without its layers."""
    if isinstance(parsed, RegistryRef):
        assert parsed.digest is not None  # noqa: S101 - callers resolve or refuse a bare tag first
        index, manifest = _descend(imp, Descriptor("", parsed.digest), arch)
    else:
        index, manifest = _pick_local(imp, parsed, arch)
    return _load(imp, ref, arch, index, manifest)


def _import(
    imp: Importer, ref: str, parsed: LocalRef | RegistryRef, arch: Arch
) -> tuple[OciImage, list[LayerFile]]:
    """:func:`_config`, then the layers: the image and its layer files (staged in ``imp``, not
    committed)."""
    image = _config(imp, ref, parsed, arch)
    return image, [imp.layer(layer, i) for i, layer in enumerate(image.layers)]


# -- public API --------------------------------------------------------------------------------------
def resolve_image(
    ref: str, *, arch: Arch, store: Store, project_dir: Path, allow_tag: bool = False
) -> OciImage:
    """Resolve ``ref`` to the image for ``arch``; afterwards all its blobs are in ``store``.

    A registry reference must be pinned by digest unless ``allow_tag`` (inspection commands).
    """
    parsed = parse_image_ref(ref, project_dir)
    if isinstance(parsed, RegistryRef) and parsed.digest is None:
        if not allow_tag:
            msg = (
                f"image {ref!r} is not pinned by digest, so the build would not be reproducible: write "
                f"{parsed.host}/{parsed.repository}@sha256:… or run '{LOCK_COMMAND}' to resolve the "
                "tag and record its digest in eif.lock"
            )
            raise ConfigError(msg)
        parsed = _resolve_registry_tag(parsed)
    with _open_source(parsed) as source:
        imp = Importer(store, source)
        try:
            image, files = _import(imp, ref, parsed, arch)
            if imp.fetched:
                Rootfs(files)  # the layer-safety rules, before anything staged enters the store
                imp.commit()
        finally:
            imp.close()
    for note in image.unsupported:
        log.warn(f"{ref}: {note}")
    return image


class _NotInStore(Exception):
    """Raised by :class:`_StoreOnly` when a blob would have to be downloaded."""


class _StoreOnly:
    """A registry source that never touches the network: every blob must already be in the store."""

    kind: ImageSourceKind = "registry"

    def __init__(self, where: str) -> None:
        self.where = where

    def index(self) -> bytes:
        raise _NotInStore

    def open(self, digest: str, *, manifest: bool) -> IO[bytes]:
        raise _NotInStore

    def close(self) -> None:
        pass


def cached_image(ref: str, *, arch: Arch, store: Store, project_dir: Path) -> OciImage | None:
    """The image :func:`resolve_image` would return, if that needs no download; else None.

    Local layouts and archives are read (they are on disk anyway); a registry image counts only if
    its index, manifest, config and layers are all in the store already. Used for cheap no-op checks.
    """
    parsed = parse_image_ref(ref, project_dir)
    if not isinstance(parsed, RegistryRef):
        return resolve_image(ref, arch=arch, store=store, project_dir=project_dir)
    if parsed.digest is None:
        return None
    imp = Importer(store, _StoreOnly(str(parsed)))
    try:
        image, _ = _import(imp, ref, parsed, arch)
        if imp.pending:
            return None
    except _NotInStore:
        return None
    finally:
        imp.close()
    return image


def registry_tag(ref: str, project_dir: Path) -> RegistryRef | None:
    """``ref`` parsed when it names a registry image by tag only (what ``eifbuild lock`` pins)."""
    parsed = parse_image_ref(ref, project_dir)
    return parsed if isinstance(parsed, RegistryRef) and parsed.digest is None else None


def platform_manifests(pinned: str, arches: Sequence[Arch], *, store: Store) -> dict[Arch, str]:
    """The manifest digest each of ``arches`` takes from the digest-pinned registry image
    ``pinned``: indexes, manifests and configs are fetched (verified, kept in ``store``), no layers.
    An arch the image lacks is an :class:`ArchiveError` listing what it has."""
    parsed = parse_ref(pinned)
    if parsed.digest is None:
        msg = f"image reference {pinned!r} is not pinned by digest"
        raise InputError(msg)
    found: dict[Arch, str] = {}
    with _open_source(parsed) as source:
        imp = Importer(store, source)
        try:
            for arch in arches:
                found[arch] = _config(imp, pinned, parsed, arch).manifest_digest
            imp.commit()
        finally:
            imp.close()
    return found


def image_arches(ref: str, *, store: Store, project_dir: Path) -> tuple[Arch, ...]:
    """The arches of eifbuild's that ``ref`` has a Linux image for (a tag is resolved first):
    indexes, manifests and configs are read, no layer."""
    parsed = parse_image_ref(ref, project_dir)
    if isinstance(parsed, RegistryRef) and parsed.digest is None:
        parsed = _resolve_registry_tag(parsed)
    found: list[Arch] = []
    with _open_source(parsed) as source:
        imp = Importer(store, source)
        try:
            for arch in ARCHES:
                with contextlib.suppress(ArchiveError):
                    _config(imp, ref, parsed, arch)
                    found.append(arch)
        finally:
            imp.close()
    return tuple(found)


def resolve_tag(ref: str) -> str:
    """``host/repo:tag`` → ``host/repo@sha256:…`` of what the tag points to now (index or manifest)."""
    parsed = parse_ref(ref)
    if parsed.digest is not None:
        return str(parsed)
    return str(_resolve_registry_tag(parsed))


def layer_files(image: OciImage, store: Store) -> list[LayerFile]:
    files = []
    for layer in image.layers:
        entry = store.get(layer_step(layer).key)
        if entry is None:
            msg = f"layer {layer.digest} of {image.ref} is not in the store (gc?): resolve the image again"
            raise StoreError(msg)
        files.append(LayerFile(layer.digest, entry.file("layer.tar")))
    return files


def rootfs_entries(image: OciImage, store: Store) -> list[Entry]:
    """The merged rootfs as cpio entries (paths relative to the rootfs), streaming from the store."""
    return Rootfs(layer_files(image, store)).entries()


def unpack_image(image: OciImage, store: Store, dest: Path, *, preserve_special: bool = False) -> Unpacked:
    """Write the merged rootfs into ``dest`` (new or empty) for inspection; device nodes and
    setuid/setgid bits only with ``preserve_special`` (the result lists what was skipped)."""
    return Rootfs(layer_files(image, store)).unpack(dest, preserve_special=preserve_special)


def app_command(
    image: OciImage,
    cmd: Sequence[str] | None = None,
    env: Mapping[str, str] | Sequence[tuple[str, str]] | None = None,
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(argv, env lines) for /cmd and /env: the image's, with eif.toml's ``cmd`` replacing the argv
    and eif.toml's ``env`` merged over the image's Env (same key: eif.toml wins)."""
    argv = tuple(cmd) if cmd is not None else image.argv
    if not argv:
        msg = f"image {image.ref!r} has neither Entrypoint nor Cmd: set [app] cmd"
        raise ConfigError(msg)
    merged: dict[str, str] = {}
    for line in image.env:
        key, _, value = line.partition("=")
        merged[key] = value
    extra = env.items() if isinstance(env, Mapping) else (env or ())
    merged.update(dict(extra))
    return argv, tuple(f"{k}={v}" for k, v in merged.items())
