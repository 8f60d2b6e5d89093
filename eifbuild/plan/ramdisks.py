"""The ramdisk nodes of a build plan: the bootstrap ramdisk (init, nsm.ko) and the app ramdisk
(rootfs, extra files, command), each a canonical cpio archive in the store (store step ``ramdisk``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

from .. import log
from ..ramdisk import Entry, eif_alignment, write_cpio_file
from ..store import Step
from .inputs import LocalNode, OciNode, ResolvedImage, TextNode
from .node import Artifact, StoredNode, cached_results, digests

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from ..arch import Arch
    from ..oci import OciImage
    from ..ramdisk import Compression, Modes
    from ..store import Store
    from .node import Node, Result

RAMDISK_STEP_VERSION: Final = 1


class RamdiskNode(StoredNode[Artifact]):
    """A canonical cpio archive in the store (output ``ramdisk.cpio``)."""

    OUTPUT: Final = "ramdisk.cpio"

    def __init__(
        self, *, layout: str, arch: Arch, mtime: int, compression: Compression, store: Store
    ) -> None:
        super().__init__(store)
        self.layout = layout
        self.arch = arch
        self.mtime = mtime
        self.compression = compression
        self.task = f"ramdisk:{layout}:{arch}"
        self.doc = f"pack the {layout} ramdisk for {arch}"

    def inputs(self) -> dict[str, Node[Any]]:
        raise NotImplementedError

    def params(self, inputs: Mapping[str, Result]) -> dict[str, Any]:
        """The step's parameters, given the results of :meth:`inputs`."""
        return {
            "layout": self.layout,
            "mtime": self.mtime,
            "compression": self.compression,
            "align": eif_alignment([self.compression]),
        }

    def step(self) -> Step | None:
        inputs = cached_results(self.inputs())
        if inputs is None:
            return None
        return Step("ramdisk", RAMDISK_STEP_VERSION, self.params(inputs), digests(inputs))

    def _lookup(self) -> Artifact | None:
        entry = self._stored()
        return None if entry is None else Artifact.in_entry(entry, self.OUTPUT)

    def entries(self) -> list[Entry]:
        raise NotImplementedError

    def _realize(self) -> Artifact:
        step = self._step_after_deps()
        params = step.params

        def write(out: Path) -> None:  # runs only when the store lacks the step
            log.step(f"pack the {self.layout} ramdisk for {self.arch}")
            write_cpio_file(
                self.entries(),
                out / self.OUTPUT,
                mtime=self.mtime,
                compression=params["compression"],
                align=params["align"],
            )

        return Artifact.in_entry(self.store.realize(step, write), self.OUTPUT)


class BootstrapRamdisk(RamdiskNode):
    def __init__(self, init: Node[Artifact], nsm: Node[Artifact] | None, **kwargs: Any) -> None:
        super().__init__(layout="bootstrap", **kwargs)
        self.init = init
        self.nsm = nsm
        self.deps = (init,) if nsm is None else (init, nsm)

    def inputs(self) -> dict[str, Node[Any]]:
        return {"init": self.init} if self.nsm is None else {"init": self.init, "nsm": self.nsm}

    def entries(self) -> list[Entry]:
        from .. import ramdisk  # noqa: PLC0415 - only needed when packing

        nsm = None if self.nsm is None else self.nsm.require().path
        return ramdisk.bootstrap_entries(self.init.require().path, nsm)


@dataclass(frozen=True)
class AppFileInput:
    dest: str
    node: Node[Artifact] | TextNode
    mode: int | None
    executable: bool  # compiled programs default to 0755


@dataclass(frozen=True)
class InjectedFile:
    """A file the app ramdisk gains whatever its inputs say (the test hook of ``doit check``)."""

    path: str
    text: str


class AppRamdisk(RamdiskNode):
    def __init__(
        self,
        *,
        rootfs: OciNode | LocalNode | None,
        files: Sequence[AppFileInput],
        cmd: Sequence[str] | None,
        env: Sequence[tuple[str, str]] | None,
        modes: Modes,
        inject: InjectedFile | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(layout="app", **kwargs)
        self.rootfs = rootfs
        self.files = tuple(files)
        self.cmd = None if cmd is None else tuple(cmd)
        self.env = env
        self.modes = modes
        self.inject = inject
        self.deps = tuple(n for n in (rootfs, *(f.node for f in files)) if n is not None)

    def inputs(self) -> dict[str, Node[Any]]:
        found: dict[str, Node[Any]] = {} if self.rootfs is None else {"rootfs": self.rootfs}
        found.update({f"file:{f.dest}": f.node for f in self.files})
        return found

    def command(self, image: OciImage | None) -> tuple[list[str], list[str]]:
        """argv and env lines (an OCI ``image``'s defaults under eif.toml's overrides)."""
        env = None if self.env is None else dict(self.env)
        if image is not None:
            from .. import oci  # noqa: PLC0415

            argv_t, env_t = oci.app_command(image, self.cmd, env)
            return list(argv_t), list(env_t)
        argv = list(self.cmd or ())
        return argv, [f"{k}={v}" for k, v in (env or {}).items()]

    def params(self, inputs: Mapping[str, Result]) -> dict[str, Any]:
        rootfs = inputs.get("rootfs")
        argv, env = self.command(rootfs.image if isinstance(rootfs, ResolvedImage) else None)
        files = {f.dest: f.mode for f in self.files}
        inject = None if self.inject is None else (self.inject.path, self.inject.text)
        return {
            **super().params(inputs),
            "cmd": argv,
            "env": env,
            "modes": self.modes,
            "files": files,
            "inject": inject,
        }

    def _file_spec(self, item: AppFileInput) -> Entry | Path | bytes:
        rel = item.dest.lstrip("/")
        if isinstance(item.node, TextNode):
            data = item.node.require().data
            return Entry.file(rel, data, mode=0o644 if item.mode is None else item.mode)
        path = item.node.require().path
        if path.is_dir():
            return path
        mode = item.mode if item.mode is not None else 0o755 if item.executable else None
        return path if mode is None else Entry.file(rel, path, mode=mode)

    def entries(self) -> list[Entry]:
        from .. import oci, ramdisk  # noqa: PLC0415 - only needed when packing

        image: OciImage | None = None
        rootfs: Path | list[Entry] = []
        if isinstance(self.rootfs, OciNode):
            image = self.rootfs.require().image
            rootfs = oci.rootfs_entries(image, self.store)
        elif self.rootfs is not None:
            rootfs = self.rootfs.require().path
        argv, env = self.command(image)
        files: dict[str, Entry | Path | bytes] = {f.dest.lstrip("/"): self._file_spec(f) for f in self.files}
        if self.inject is not None:
            files[self.inject.path] = self.inject.text.encode()
        return ramdisk.app_entries(rootfs, argv, env, modes=self.modes, files=files or None)
