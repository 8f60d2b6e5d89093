"""Where image blobs come from: an OCI layout directory, an OCI or docker-save archive, a registry.

Every source hands out blobs by digest as streams; none of them verifies anything (the importer in
:mod:`eifbuild.oci._importer` hashes every byte it reads). Local sources also give the image *index* that
roots them: ``index.json`` of a layout, or, for a legacy ``docker save`` archive (``manifest.json``
and a config + uncompressed layer tars), an index synthesised from ``manifest.json``: one OCI
manifest per image whose layer digests are the config's ``diff_ids`` (the layer files are
uncompressed, so their digest *is* the diff_id and still gets verified).
"""

from __future__ import annotations

import gzip
import io
import posixpath
import tarfile
from typing import IO, TYPE_CHECKING, Any, Final, Literal, Protocol

from ..errors import ArchiveError, FetchError, FileAccessError, InputError
from ..store import canonical_json
from ..util.bounded import decode_json, open_regular
from ..util.tomltable import DocTables
from ._registry import DIGEST_RE, OCI_INDEX, OCI_MANIFEST, RegistryClient, RegistryRef, digest_of

if TYPE_CHECKING:
    from pathlib import Path
    from types import TracebackType

    from ..store import Downloaded

ImageSourceKind = Literal["registry", "oci-layout", "oci-archive", "docker-archive"]

OCI_CONFIG: Final = "application/vnd.oci.image.config.v1+json"
OCI_LAYER_TAR: Final = "application/vnd.oci.image.layer.v1.tar"
REF_NAME: Final = "org.opencontainers.image.ref.name"
MAX_JSON: Final = 16 << 20  # manifests are ≤ 4 MiB by spec; configs with long histories get more
_MAX_LINK_HOPS: Final = 8


class ImageSource(Protocol):
    """Where an image's blobs come from: a layout directory, an image archive or a registry."""

    kind: ImageSourceKind
    where: str

    def index(self) -> bytes:
        """The root index of a local source (``index.json`` or synthesised)."""
        ...

    def open(self, digest: str, *, manifest: bool) -> IO[bytes]:
        """A stream of the blob ``digest`` (``manifest``: fetch it as a manifest/index)."""
        ...

    def close(self) -> None: ...


def _split_digest(digest: str) -> tuple[str, str]:
    if not DIGEST_RE.fullmatch(digest):
        msg = f"bad digest {digest!r}: expected sha256: and 64 lowercase hex digits"
        raise ArchiveError(msg)
    algorithm, _, hexdigest = digest.partition(":")
    return algorithm, hexdigest


def _read_small(stream: IO[bytes], where: str) -> bytes:
    data = stream.read(MAX_JSON + 1)
    if len(data) > MAX_JSON:
        msg = f"larger than {MAX_JSON} bytes: not an image index or manifest"
        raise ArchiveError(msg, path=where)
    return data


class LayoutDir:
    """An OCI image layout directory: ``oci-layout``, ``index.json``, ``blobs/<alg>/<hex>``."""

    kind: ImageSourceKind = "oci-layout"

    def __init__(self, root: Path) -> None:
        self.root = root
        self.where = str(root)
        if not (root / "index.json").is_file():
            msg = "not an OCI image layout: no index.json in this directory"
            raise InputError(msg, path=root)

    def index(self) -> bytes:
        try:
            fh = open_regular(self.root / "index.json", what="index.json")
        except FileAccessError as exc:
            raise ArchiveError(exc.reason, path=self.root) from None
        with fh:
            return _read_small(fh, f"{self.where}/index.json")

    def open(self, digest: str, *, manifest: bool) -> IO[bytes]:
        algorithm, hexdigest = _split_digest(digest)
        path = self.root / "blobs" / algorithm / hexdigest
        if not path.exists():
            msg = f"blob {digest} is missing (expected blobs/{algorithm}/{hexdigest})"
            raise ArchiveError(msg, path=self.root)
        try:  # a regular file only: a FIFO or a device as a blob is refused, never read
            return open_regular(path, what=f"blob {digest}")
        except FileAccessError as exc:
            raise ArchiveError(exc.reason, path=self.root) from None

    def close(self) -> None:
        pass


class ImageArchive:
    """A tar of an OCI layout (``oci-archive``) or a ``docker save`` archive (``docker-archive``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.where = str(path)
        self._file = open_regular(path, what="image archive")  # a FIFO or device is refused
        try:
            self._tar = tarfile.open(fileobj=self._file, mode="r:*")  # noqa: SIM115 - closed by close()
            self._members = {posixpath.normpath(m.name.lstrip("/")): m for m in self._tar.getmembers()}
        except (tarfile.TarError, EOFError, gzip.BadGzipFile, ValueError) as exc:
            self._file.close()
            msg = f"not a readable image archive: {exc}"
            raise ArchiveError(msg, path=path) from None
        except OSError as exc:
            self._file.close()
            msg = f"not a readable image archive: {exc}"
            raise FileAccessError(msg, path=path) from None
        self._synthetic: dict[str, bytes] = {}  # digest -> blob made up from manifest.json
        self._names: dict[str, str] = {}  # digest -> member name (docker-save)
        if "index.json" in self._members:
            self.kind: ImageSourceKind = "oci-archive"
        elif "manifest.json" in self._members:
            self.kind = "docker-archive"
        else:
            self.close()
            msg = "not an image archive: no index.json (OCI) or manifest.json (docker save) inside"
            raise ArchiveError(msg, path=path)

    def __enter__(self) -> ImageArchive:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._tar.close()
        self._file.close()

    def _member(self, name: str) -> IO[bytes]:
        """Open a member, following symlinks inside the archive (docker save links layer.tar files)."""
        key = posixpath.normpath(name.lstrip("/"))
        for _ in range(_MAX_LINK_HOPS):
            info = self._members.get(key)
            if info is None:
                break
            if info.issym():
                key = posixpath.normpath(posixpath.join(posixpath.dirname(key), info.linkname))
                continue
            stream = self._tar.extractfile(info) if info.isfile() else None
            if stream is None:
                break
            return stream
        msg = f"{name!r} is missing or not a regular file"
        raise ArchiveError(msg, path=self.path, member=name)

    def index(self) -> bytes:
        if self.kind == "oci-archive":
            with self._member("index.json") as fh:
                return _read_small(fh, f"{self.where}:index.json")
        return self._docker_index()

    def open(self, digest: str, *, manifest: bool) -> IO[bytes]:
        if digest in self._synthetic:
            return io.BytesIO(self._synthetic[digest])
        algorithm, hexdigest = _split_digest(digest)
        name = self._names.get(digest, f"blobs/{algorithm}/{hexdigest}")
        try:
            return self._member(name)
        except ArchiveError:
            msg = f"blob {digest} is missing (expected member {name!r})"
            raise ArchiveError(msg, path=self.path) from None

    # -- docker save -------------------------------------------------------------------------------
    def _check(self, member: str) -> DocTables:
        """The one validator's checks on the JSON of ``member``; errors name the archive and member."""

        def error(key: str | None, message: str) -> ArchiveError:
            return ArchiveError(f"{key}: {message}" if key else message, path=self.path, member=member)

        return DocTables(self.path, error)

    def _json(self, name: str) -> Any:
        with self._member(name) as fh:
            data = _read_small(fh, f"{self.where}:{name}")
        try:
            return decode_json(data)
        except ValueError as exc:
            msg = f"not valid JSON: {exc}"
            raise ArchiveError(msg, path=self.path, member=name) from None

    def _docker_index(self) -> bytes:
        images = self._json("manifest.json")
        if not isinstance(images, list) or not images:
            msg = "expected a non-empty list of images"
            raise ArchiveError(msg, path=self.path, member="manifest.json")
        descriptors = []
        for number, image in enumerate(images):
            descriptors.extend(self._docker_image(image, f"manifest.json[{number}]"))
        return canonical_json({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors})

    def _docker_image(self, image: Any, where: str) -> list[dict[str, Any]]:
        check = self._check("manifest.json")
        if not isinstance(image, dict) or not isinstance(image.get("Config"), str) or "Layers" not in image:
            msg = "expected an object with 'Config' and 'Layers'"
            raise ArchiveError(msg, path=self.path, member=where)
        config_name = check.string(image["Config"], f"{where}.Config")
        layer_names = check.strings(image.get("Layers"), f"{where}.Layers")
        raw_tags = image.get("RepoTags")
        tags: list[str | None] = []
        if raw_tags is not None:
            tags.extend(check.strings(raw_tags, f"{where}.RepoTags"))
        with self._member(config_name) as fh:
            config_bytes = _read_small(fh, f"{self.where}:{config_name}")
        try:
            config = decode_json(config_bytes)
        except ValueError as exc:
            msg = f"not valid JSON: {exc}"
            raise ArchiveError(msg, path=self.path, member=config_name) from None
        in_config = self._check(config_name)
        config = in_config.table(config, "config")
        rootfs = in_config.table(config.get("rootfs"), "rootfs")
        diff_ids = in_config.strings(rootfs.get("diff_ids"), "rootfs.diff_ids")
        if len(diff_ids) != len(layer_names):
            msg = f"{len(layer_names)} layers but the config lists {len(diff_ids)} diff_ids"
            raise ArchiveError(msg, path=self.path, member=where)
        config_digest = digest_of(config_bytes)
        self._names[config_digest] = config_name
        layers = []
        for diff_id, name in zip(diff_ids, layer_names, strict=True):
            _split_digest(diff_id)
            self._names[diff_id] = name
            info = self._members.get(posixpath.normpath(name.lstrip("/")))
            size = {"size": info.size} if info is not None and info.isfile() else {}  # not through links
            layers.append({"mediaType": OCI_LAYER_TAR, "digest": diff_id, **size})
        manifest = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": config_digest, "size": len(config_bytes)},
                "layers": layers,
            }
        )
        digest = digest_of(manifest)
        self._synthetic[digest] = manifest
        platform = {"os": str(config.get("os", "")), "architecture": str(config.get("architecture", ""))}
        return [
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest,
                "size": len(manifest),
                "platform": platform,
                **({"annotations": {REF_NAME: tag}} if isinstance(tag, str) else {}),
            }
            for tag in (tags or [None])
        ]


class RegistrySource:
    """A repository in a registry; the client (and any network use) is created on first need."""

    kind: ImageSourceKind = "registry"

    def __init__(self, ref: RegistryRef) -> None:
        self.ref = ref
        self.where = f"{ref.host}/{ref.repository}"
        self._client: RegistryClient | None = None

    @property
    def client(self) -> RegistryClient:
        if self._client is None:
            self._client = RegistryClient(self.ref)
        return self._client

    def index(self) -> bytes:
        msg = "a registry has no local index; images are selected by digest"
        raise FetchError(msg, url=self.where)

    def open(self, digest: str, *, manifest: bool) -> IO[bytes]:
        if manifest:
            return io.BytesIO(self.client.manifest(digest)[0])
        return self.client.blob(digest)

    def download(self, digest: str, part: Path, *, max_size: int | None, label: str) -> Downloaded:
        """The blob into the file ``part``, resuming what an earlier attempt left there (unverified)."""
        return self.client.download_blob(digest, part, max_size=max_size, label=label)

    def close(self) -> None:
        if self._client is not None:
            self._client.session.close()
