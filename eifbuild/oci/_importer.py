"""Fetching image blobs into the store: verified while streaming, staged, committed all at once.

Every blob is hashed while it streams and checked against its digest and declared size (a
registry's layer blobs stream from the store's downloads/, see :mod:`eifbuild.store.blobs`); layers
are decompressed (gzip, zstd or plain tar, told apart by their magic bytes) on the way and their
uncompressed digest is checked against the config's diff_id. Nothing reaches the store until
:meth:`Importer.commit`: a bad blob anywhere in an image leaves the store as it was.

Store entries: ``oci-blob`` (``blob``: an index, manifest or config, keyed by its digest) and
``oci-layer`` (``layer.tar``: the *uncompressed* layer, keyed by the layer blob's digest and its
diff_id). Both are content-addressed: the digest in the step names the one output, so a shared
cache behind the store's substituter (:meth:`~eifbuild.store.Store.substitute`) can serve them
unsigned. A registry image's blobs missing from the store are asked of it before the registry is;
those it serves are committed at once (verified by their digests, as the store's own are read).
"""

from __future__ import annotations

import contextlib
import functools
import gzip
import os
import secrets
import tempfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, Final, cast

from .. import log
from ..errors import ArchiveError, HashMismatch, StoreError
from ..sources import ZSTD_ERROR, ZSTD_MAGIC, zstd_reader
from ..store import BlobDownloads, Step, Store, StoreEntry, TypedParams, check_blob
from ..util.bounded import INPUT_CAP, Capped, decode_json
from ..util.fsutil import CHUNK, StreamHasher, copy_hashed
from ._layers import LayerFile
from ._registry import DIGEST_RE, digest_of
from ._transport import MAX_JSON, ImageSource, RegistrySource

if TYPE_CHECKING:
    from collections.abc import Mapping

BLOB_KIND: Final = "oci-blob"
LAYER_KIND: Final = "oci-layer"
STEP_VERSION: Final = 1


@dataclass(frozen=True)
class BlobParams(TypedParams):
    """An ``oci-blob`` step: the index, manifest or config whose ``digest`` names its one output."""

    KIND: ClassVar[str] = BLOB_KIND
    VERSION: ClassVar[int] = STEP_VERSION

    digest: str

    def to_json(self) -> dict[str, str]:
        return {"digest": self.digest}


@dataclass(frozen=True)
class LayerParams(TypedParams):
    """An ``oci-layer`` step: the uncompressed tar (``diff_id``) of the layer blob ``digest``."""

    KIND: ClassVar[str] = LAYER_KIND
    VERSION: ClassVar[int] = STEP_VERSION

    digest: str
    diff_id: str

    def to_json(self) -> dict[str, str]:
        return {"digest": self.digest, "diff_id": self.diff_id}


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int | None = None
    platform: str = ""  # "linux/amd64", "linux/arm64/v8"; "" when not given
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Layer:
    digest: str  # of the blob as stored/transported (maybe compressed)
    diff_id: str  # of the uncompressed tar
    size: int | None
    media_type: str


def blob_step(digest: str) -> Step[BlobParams]:
    return Step(BlobParams(digest))


def layer_step(layer: Layer) -> Step[LayerParams]:
    """The uncompressed ``layer.tar`` of a layer blob: its diff_id in the step names its content."""
    return Step(LayerParams(layer.digest, layer.diff_id))


# -- verified streaming -------------------------------------------------------------------------------
class _Counted:
    """Hashes and counts what is read through it; refuses to read past ``limit`` bytes."""

    def __init__(self, stream: IO[bytes], digest: str, limit: int | None, what: str) -> None:
        self.stream = stream
        self.expected = digest
        algorithm = digest.partition(":")[0]
        self.hasher = StreamHasher((algorithm,))
        self.algorithm = algorithm
        self.limit = INPUT_CAP.value() if limit is None else limit  # no size declared: the cap
        self.capped = limit is None
        self.what = what
        self.head = b""

    def read(self, n: int = -1) -> bytes:
        if self.head:
            cut = len(self.head) if n < 0 else n
            data, self.head = self.head[:cut], self.head[cut:]
            return data
        data = self.stream.read(CHUNK if n < 0 else n)
        self.hasher.update(data)
        if self.size > self.limit:
            msg = f"{self.what}: more than the {self.limit} bytes expected"
            if self.capped:
                msg = f"{self.what}: no size declared and more than {self.limit} bytes ({INPUT_CAP.env})"
            raise ArchiveError(msg)
        return data

    def too_big(self, limit: int) -> ArchiveError:
        msg = f"{self.what}: more than {limit} bytes uncompressed (the limit {INPUT_CAP.env} raises)"
        return ArchiveError(msg)

    def peek(self, n: int) -> bytes:
        self.head = self.read(n)
        return self.head

    def drain(self) -> None:
        self.head = b""
        while self.read(CHUNK):
            pass

    @property
    def size(self) -> int:
        return self.hasher.size

    @property
    def digest(self) -> str:
        return f"{self.algorithm}:{self.hasher.hexdigest(self.algorithm)}"


def _check(counted: _Counted, size: int | None) -> None:
    check_blob(counted.what, counted.expected, counted.digest, counted.size, size)


def _decompressor(counted: _Counted) -> tuple[str, IO[bytes]]:
    head = counted.peek(4)
    if head.startswith(b"\x1f\x8b"):
        return "gzip", cast("IO[bytes]", gzip.GzipFile(fileobj=cast("IO[bytes]", counted), mode="rb"))
    if head == ZSTD_MAGIC:
        return "zstd", zstd_reader(counted)
    if head.startswith((b"BZh", b"\xfd7zX")):
        msg = f"{counted.what}: bzip2/xz layers are not allowed by the OCI spec (gzip, zstd or plain tar)"
        raise ArchiveError(msg)
    return "none", cast("IO[bytes]", counted)


_DECOMPRESS_ERRORS: Final = (gzip.BadGzipFile, EOFError, zlib.error, ZSTD_ERROR)


# -- stage, verify, commit --------------------------------------------------------------------------
class Importer:
    """Reads blobs from the store or stages them from a source; commits staged ones at the end."""

    def __init__(self, store: Store, source: ImageSource) -> None:
        self.store = store
        self.source = source
        self.docs: dict[str, Any] = {}
        self.layers: dict[str, tuple[LayerFile, str]] = {}  # images may repeat a layer (empty ones)
        self.pending: list[tuple[Step[BlobParams | LayerParams], str, Path]] = []
        self.downloads = BlobDownloads(store)
        self.downloaded: list[str] = []  # digests of blobs in downloads/, removed once committed
        # a registry's blobs are asked of the store's substituter first; local ones are read in place
        self.asks_substituter = isinstance(source, RegistrySource)
        self.substituted: list[str] = []  # keys the substituter filled in this import
        self._work: Path | None = None
        self._lock = contextlib.ExitStack()

    @property
    def work(self) -> Path:
        """The staging dir in the store's tmp/; its lock keeps ``store gc`` away while we run."""
        if self._work is None:
            log.step(f"importing image blobs from {self.source.where}")
            name = f"oci-import-{secrets.token_hex(8)}"
            self._lock.enter_context(self.store.lock(name))
            self.store.tmp_dir.mkdir(parents=True, exist_ok=True)
            self._work = Path(tempfile.mkdtemp(prefix=f"{name}.", dir=self.store.tmp_dir))
        return self._work

    def close(self) -> None:
        if self._work is not None:
            for path in self._work.iterdir():
                path.unlink()
            self._work.rmdir()
        self._lock.close()

    def _staged(self, name: str) -> Path:
        return self.work / f"{len(self.pending)}.{name}"

    @property
    def fetched(self) -> bool:
        """Whether this import brought anything into the store (staged, or substituted)."""
        return bool(self.pending or self.substituted)

    def _stored(self, step: Step[Any]) -> StoreEntry | None:
        """The store's entry for ``step``, or (a registry's blob) the one its substituter fills."""
        entry = self.store.get(step.key)
        if entry is None and self.asks_substituter:
            entry = self.store.substitute(step)
            if entry is not None:
                self.substituted.append(step.key)
        return entry

    def json(self, desc: Descriptor, *, manifest: bool, what: str) -> Any:
        """The parsed JSON blob ``desc`` (from the store, or fetched, verified and staged)."""
        if desc.digest in self.docs:
            return self.docs[desc.digest]
        algorithm = desc.digest.partition(":")[0]
        entry = self._stored(blob_step(desc.digest))
        if entry is not None:
            data = entry.file("blob").read_bytes()
            if digest_of(data, algorithm) != desc.digest:
                msg = f"{what} {desc.digest} changed in the store; run 'eifbuild store verify --repair'"
                raise StoreError(msg, key=entry.key)
        else:
            staged = self._staged("blob")
            with self.source.open(desc.digest, manifest=manifest) as stream:
                counted = _Counted(stream, desc.digest, desc.size or MAX_JSON, f"{what} {desc.digest}")
                data = b"".join(iter(functools.partial(counted.read, CHUNK), b""))
            _check(counted, desc.size)
            staged.write_bytes(data)
            self.pending.append((blob_step(desc.digest), "blob", staged))
        try:
            doc = decode_json(data)
        except ValueError as exc:
            msg = f"{what} {desc.digest} is not valid JSON: {exc}"
            raise ArchiveError(msg, path=self.source.where) from None
        if not isinstance(doc, dict):
            msg = f"{what} {desc.digest}: expected a JSON object"
            raise ArchiveError(msg, path=self.source.where)
        self.docs[desc.digest] = doc
        return doc

    def layer(self, layer: Layer, number: int) -> LayerFile:
        """The uncompressed tar of ``layer`` (from the store, or fetched, verified and staged)."""
        if layer.digest not in self.layers:
            self.layers[layer.digest] = (self._layer(layer, number), layer.diff_id)
        found, diff_id = self.layers[layer.digest]
        if diff_id != layer.diff_id:
            what = f"layer {layer.digest} (layer {number} of the image): uncompressed"
            raise HashMismatch(what, expected=layer.diff_id, actual=diff_id)
        return found

    def _layer(self, layer: Layer, number: int) -> LayerFile:
        what = f"layer {layer.digest} (layer {number} of the image)"
        entry = self._stored(layer_step(layer))
        if entry is None:
            staged = self._staged("layer.tar")
            found = self._open_blob(layer, what)
            if not isinstance(found, StoreEntry):
                try:
                    return self._stage_layer(layer, what, found, staged)
                except (HashMismatch, ArchiveError):
                    if layer.digest in self.downloaded:  # changed on disk since: never read it again
                        self.downloads.remove(layer.digest)
                    raise
            entry = found
        if layer.diff_id.startswith("sha256:") and entry.digest("layer.tar") != layer.diff_id[7:]:
            raise HashMismatch(what, expected=layer.diff_id, actual="sha256:" + entry.digest("layer.tar"))
        return LayerFile(layer.digest, entry.file("layer.tar"))

    def _open_blob(self, layer: Layer, what: str) -> IO[bytes] | StoreEntry:
        """A stream of the layer's blob; a registry's is downloaded into the store's downloads/
        first, one process at a time (or the store entry another import committed meanwhile)."""
        if not isinstance(self.source, RegistrySource):
            return self.source.open(layer.digest, manifest=False)
        with self.downloads.lock(layer.digest):
            entry = self.store.get(layer_step(layer).key)
            if entry is not None:
                return entry
            self.downloaded.append(layer.digest)
            return self.downloads.open(self.source, layer.digest, layer.size, what)

    def _stage_layer(self, layer: Layer, what: str, blob: IO[bytes], staged: Path) -> LayerFile:
        with blob as stream:
            counted = _Counted(stream, layer.digest, layer.size, what)
            diff_algorithm = layer.diff_id.partition(":")[0]
            diff = StreamHasher((diff_algorithm,))
            with log.progress(f"layer {layer.digest[7:19]}", layer.size) as bar:
                compression = self._decompress(counted, staged, diff, bar)
        _check(counted, layer.size)
        actual = f"{diff_algorithm}:{diff.hexdigest(diff_algorithm)}"
        if actual != layer.diff_id:
            what = f"{what}: uncompressed ({compression})"
            raise HashMismatch(what, expected=layer.diff_id, actual=actual)
        log.info(f"oci: {what}: {compression}, verified")
        self.pending.append((layer_step(layer), "layer.tar", staged))
        return LayerFile(layer.digest, staged)

    def _decompress(self, counted: _Counted, staged: Path, diff: StreamHasher, bar: log.Progress) -> str:
        compression, stream = _decompressor(counted)
        done = 0

        def advance(_: int) -> None:  # the bar counts compressed bytes: those read from the blob
            nonlocal done
            bar.update(counted.size - done)
            done = counted.size

        try:
            with open(staged, "wb") as out:
                copy_hashed(Capped(stream, INPUT_CAP.value(), counted.too_big), diff, out, on_chunk=advance)
            counted.drain()
        except _DECOMPRESS_ERRORS as exc:
            counted.drain()
            _check(counted, None)  # a blob that is not what it claims says so first
            msg = f"{counted.what}: corrupt {compression} stream: {exc}"
            raise ArchiveError(msg) from None
        return compression

    def commit(self) -> None:
        """Move the staged blobs into the store: verified already, so the substituter is not asked
        (for a registry image it was asked before the download; a local image is read in place)."""
        for step, name, staged in self.pending:
            move = functools.partial(_move_into, staged, name)
            self.store.realize(step, move, substitute=False)
        self.pending.clear()
        for digest in self.downloaded:  # their layers are in the store now
            self.downloads.remove(digest)
        self.downloaded.clear()


def _move_into(staged: Path, name: str, _: BlobParams | LayerParams, out: Path) -> None:
    """Commit a staged blob, verified already against the digest its step's parameters name."""
    os.replace(staged, out / name)


# -- descriptors -----------------------------------------------------------------------------------
def descriptor(raw: Any, where: str) -> Descriptor:
    if not isinstance(raw, dict) or not isinstance(raw.get("digest"), str):
        msg = f"{where}: expected a descriptor with a digest"
        raise ArchiveError(msg)
    if not DIGEST_RE.fullmatch(raw["digest"]):
        msg = f"{where}: bad digest {raw['digest']!r}: expected sha256: and 64 hex digits"
        raise ArchiveError(msg)
    size = raw.get("size")
    if size is not None and (not isinstance(size, int) or size < 0):
        msg = f"{where}: bad size {size!r}"
        raise ArchiveError(msg)
    platform = raw.get("platform")
    plat = ""
    if isinstance(platform, dict):
        plat = "/".join(str(platform.get(k, "")) for k in ("os", "architecture", "variant")).rstrip("/")
    annotations = raw.get("annotations")
    return Descriptor(
        str(raw.get("mediaType", "")),
        raw["digest"],
        size,
        plat,
        {str(k): str(v) for k, v in annotations.items()} if isinstance(annotations, dict) else {},
    )


def descriptors(doc: Mapping[str, Any], key: str, where: str) -> list[Descriptor]:
    raw = doc.get(key)
    if not isinstance(raw, list):
        msg = f"{where}: expected a list {key!r}"
        raise ArchiveError(msg)
    return [descriptor(item, f"{where} {key}[{i}]") for i, item in enumerate(raw)]
