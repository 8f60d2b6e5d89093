"""The leaves of a build plan and the compile step: what the ramdisks and the EIF are made of.

- :class:`SourceNode`: a pinned recipe source (store step ``source``);
- :class:`LocalNode`: a file or directory of the project, hashed, not copied into the store;
- :class:`TextNode`: file content written inline in eif.toml;
- :class:`CompileNode`: C sources → a static binary with zig (store step ``zig-cc``);
- :class:`OciNode`: an OCI image resolved into the store.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError, FileAccessError
from ..sources import LOCK_COMMAND
from .node import Artifact, Node, StoredNode
from .treedigest import tree_digest

if TYPE_CHECKING:
    from collections.abc import Sequence
    from pathlib import Path

    from ..arch import Arch
    from ..oci import OciImage
    from ..sources import Source, SourceParams
    from ..store import Step, Store
    from .treedigest import FileDigests


class SourceNode(StoredNode[Artifact]):
    def __init__(self, source: Source, store: Store) -> None:
        super().__init__(store)
        self.source = source
        self.task = f"fetch:{source.recipe}.{source.qualified_name}"
        self.doc = f"fetch and verify {source.origin}"

    def step(self) -> Step[SourceParams]:
        return self.source.step()

    def _lookup(self) -> Artifact | None:
        local = self.source.local_path
        if not self.source.pins.pinned or (local is not None and not local.exists()):
            return None  # a missing path source: the fetch task runs and says so
        entry = self.store.get(self.source.step().key)
        if entry is None:
            return None
        return Artifact(self.source.output_path(entry), str(entry.meta["sha256"]), entry.key)

    def _realize(self) -> Artifact:
        from ..sources import fetch_source  # noqa: PLC0415 - network code only when something is fetched

        fetched = fetch_source(self.source, store=self.store)
        return Artifact(fetched.path, fetched.sha256, fetched.key)


class LocalNode(Node[Artifact]):
    """A file or directory of the project: digested (fingerprints cached by ``digests``), never copied."""

    def __init__(self, path: Path, digests: FileDigests, *, what: str) -> None:
        super().__init__()
        self.path = path
        self.digests = digests
        self.what = what

    def step(self) -> Step[Any] | None:
        return None

    def _lookup(self) -> Artifact:
        if self.path.is_dir():
            tree = tree_digest(self.path, cache_path=self.digests.tree_cache(self.path))
            return Artifact(self.path, tree.digest)
        if not self.path.is_file():
            msg = f"{self.what}: no such file or directory"
            raise FileAccessError(msg, path=self.path)
        return Artifact(self.path, self.digests.digest(self.path))

    def _realize(self) -> Artifact:
        return self._lookup()


@dataclass(frozen=True)
class InlineText:
    """File content written inline in eif.toml: no file, no store entry."""

    data: bytes

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def store_keys(self) -> frozenset[str]:
        return frozenset()


class TextNode(Node[InlineText]):
    """File content written inline in eif.toml."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = InlineText(text.encode())

    def step(self) -> Step[Any] | None:
        return None

    def _lookup(self) -> InlineText:
        return self.text

    def _realize(self) -> InlineText:
        return self.text


class CompileNode(StoredNode[Artifact]):
    def __init__(
        self,
        sources: Sequence[Node[Artifact]],
        *,
        arch: Arch,
        cflags: Sequence[str],
        output: str,
        label: str,
        store: Store,
    ) -> None:
        super().__init__(store)
        self.sources = tuple(sources)
        self.deps = self.sources
        self.arch = arch
        self.cflags = tuple(cflags)
        self.output = output
        self.task = f"compile:{label}:{arch}"
        self.doc = f"compile {label} for {arch} with zig"

    def _paths(self) -> list[Path] | None:
        found = [source.cached() for source in self.sources]
        return None if any(a is None for a in found) else [a.path for a in found if a is not None]

    def step(self) -> Step[Any] | None:
        paths = self._paths()
        if paths is None:
            return None
        from .. import toolchain  # noqa: PLC0415 - zig's code only for projects that compile

        return toolchain.compile_step(paths, arch=self.arch, cflags=self.cflags, output_name=self.output)

    def _lookup(self) -> Artifact | None:
        entry = self._stored()
        return None if entry is None else Artifact.in_entry(entry, self.output)

    def _realize(self) -> Artifact:
        paths = [source.require().path for source in self.sources]
        from .. import toolchain  # noqa: PLC0415 - it logs the compile (and musl's first build) itself

        entry = toolchain.compile_c(
            self.store, paths, arch=self.arch, cflags=self.cflags, output_name=self.output
        )
        return Artifact.in_entry(entry, self.output)


@dataclass(frozen=True)
class ResolvedImage:
    """An OCI image whose blobs are in the store; its digest is the rootfs digest (same from any
    transport)."""

    image: OciImage

    @property
    def sha256(self) -> str:
        return self.image.rootfs_digest.removeprefix("sha256:")

    def store_keys(self) -> frozenset[str]:
        return frozenset(self.image.store_keys())


@dataclass(frozen=True)
class LockedManifest:
    """The platform manifest eif.lock recorded for an image tag and one arch."""

    digest: str
    lock_file: Path
    tag: str


class OciNode(StoredNode[ResolvedImage]):
    """An OCI image for one arch; ``locked``: the manifest eif.lock says ``ref`` (the digest that
    a tag pointed to) gives for this arch."""

    def __init__(
        self, ref: str, *, arch: Arch, store: Store, project_dir: Path, locked: LockedManifest | None = None
    ) -> None:
        super().__init__(store)
        self.ref = ref
        self.arch = arch
        self.project_dir = project_dir
        self.locked = locked
        self.task = f"fetch:oci:{arch}"
        self.doc = f"resolve {ref} for {arch} and verify its blobs into the store"

    def step(self) -> Step[Any] | None:
        return None

    def _lookup(self) -> ResolvedImage | None:
        from .. import oci  # noqa: PLC0415 - registry code only for OCI projects

        image = oci.cached_image(self.ref, arch=self.arch, store=self.store, project_dir=self.project_dir)
        return None if image is None else self._checked(image)

    def _realize(self) -> ResolvedImage:
        from .. import oci  # noqa: PLC0415

        image = oci.resolve_image(self.ref, arch=self.arch, store=self.store, project_dir=self.project_dir)
        return self._checked(image)

    def _checked(self, image: OciImage) -> ResolvedImage:
        locked = self.locked
        if locked is not None and image.manifest_digest != locked.digest:
            msg = (
                f"image {locked.tag!r} for {self.arch}: the lock records manifest {locked.digest}, but "
                f"{self.ref} gives {image.manifest_digest}: run '{LOCK_COMMAND}' after removing its entry"
            )
            raise ConfigError(msg, path=locked.lock_file, key=f"images.{locked.tag}")
        return ResolvedImage(image)
