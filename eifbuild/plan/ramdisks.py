"""The ramdisk nodes of a build plan: the bootstrap ramdisk (init, nsm.ko) and the app ramdisk
(rootfs, extra files, command), each a canonical cpio archive in the store (store step ``ramdisk``).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Generic, Literal, TypeVar

from .. import log
from ..errors import EifbuildError
from ..ramdisk import Entry, eif_alignment, write_cpio_file
from ..store import Step, TypedParams
from .inputs import InlineText, LocalNode, OciNode, ResolvedImage, TextNode
from .node import Artifact, StoredNode, cached_results, digests

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence
    from pathlib import Path

    from ..arch import Arch
    from ..oci import OciImage
    from ..ramdisk import Compression, Modes
    from ..store import Store
    from .node import Node, Result

RAMDISK_KIND: Final = "ramdisk"
BOOTSTRAP_STEP_VERSION: Final = 1
# 2: the files' origin (file, text, compiled: it decides their default mode) joined the key
APP_STEP_VERSION: Final = 2
OUTPUT: Final = "ramdisk.cpio"


@dataclass(frozen=True)
class RamdiskParams(TypedParams):
    """What every ``ramdisk`` step has: the files' ``mtime`` and the archive's ``compression``
    (which decides its alignment). ``LAYOUT`` names what goes into it."""

    KIND: ClassVar[str] = RAMDISK_KIND
    LAYOUT: ClassVar[str]

    mtime: int
    compression: Compression

    @property
    def align(self) -> int:
        return eif_alignment([self.compression])

    def to_json(self) -> dict[str, Any]:
        return {
            "layout": self.LAYOUT,
            "mtime": self.mtime,
            "compression": self.compression,
            "align": self.align,
        }


@dataclass(frozen=True)
class BootstrapRamdiskParams(RamdiskParams):
    """The bootstrap ramdisk: the ``init`` and (maybe) ``nsm`` inputs at their fixed places."""

    VERSION: ClassVar[int] = BOOTSTRAP_STEP_VERSION
    LAYOUT: ClassVar[str] = "bootstrap"


@dataclass(frozen=True)
class AppFile:
    """A file the app ramdisk gains at ``dest`` from the input ``file:<dest>``: a project or fetched
    ``file``, inline ``text`` (mode 0644 by default) or a ``compiled`` program (0755 by default)."""

    dest: str
    mode: int | None
    origin: Literal["file", "text", "compiled"]

    def to_json(self) -> dict[str, Any]:
        return {"mode": self.mode, "origin": self.origin}


@dataclass(frozen=True)
class AppRamdiskParams(RamdiskParams):
    """The app ramdisk: the ``rootfs`` input (an OCI image or a directory), ``files``, the command
    (``cmd``, ``env``: the image's defaults under eif.toml's overrides, resolved), how modes are
    taken (``modes``) and ``inject`` (path, text): the test hook's file."""

    VERSION: ClassVar[int] = APP_STEP_VERSION
    LAYOUT: ClassVar[str] = "app"

    cmd: tuple[str, ...]
    env: tuple[str, ...]
    modes: Modes
    files: tuple[AppFile, ...]
    inject: tuple[str, str] | None

    def to_json(self) -> dict[str, Any]:
        return {
            **super().to_json(),
            "cmd": list(self.cmd),
            "env": list(self.env),
            "modes": self.modes,
            "files": {f.dest: f.to_json() for f in self.files},
            "inject": None if self.inject is None else list(self.inject),
        }


RP = TypeVar("RP", BootstrapRamdiskParams, AppRamdiskParams)


class RamdiskNode(StoredNode[Artifact], Generic[RP]):
    """A canonical cpio archive in the store (output ``ramdisk.cpio``)."""

    OUTPUT: Final = OUTPUT

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

    def params(self, inputs: Mapping[str, Result]) -> RP:
        """The step's parameters, given the results of :meth:`inputs`."""
        raise NotImplementedError

    def step(self) -> Step[RP] | None:
        inputs = cached_results(self.inputs())
        if inputs is None:
            return None
        return Step(self.params(inputs), digests(inputs))

    def _lookup(self) -> Artifact | None:
        entry = self._stored()
        return None if entry is None else Artifact.in_entry(entry, self.OUTPUT)

    def entries(self, params: RP, inputs: Mapping[str, Result]) -> list[Entry]:
        """The archive's entries: from ``params`` and the results of the inputs the step names."""
        raise NotImplementedError

    def _realize(self) -> Artifact:
        step = self._step_after_deps()
        inputs = {name: node.require() for name, node in self.inputs().items()}
        entry = self.store.realize(step, functools.partial(self._write, inputs))
        return Artifact.in_entry(entry, self.OUTPUT)

    def _write(self, inputs: Mapping[str, Result], params: RP, out: Path) -> None:
        """The step's action (runs only when the store lacks the step)."""
        log.step(f"pack the {params.LAYOUT} ramdisk for {self.arch}")
        entries = self.entries(params, inputs)
        write_cpio_file(
            entries, out / self.OUTPUT, mtime=params.mtime, compression=params.compression, align=params.align
        )


def _artifact(inputs: Mapping[str, Result], name: str) -> Artifact:
    found = inputs[name]
    if not isinstance(found, Artifact):  # pragma: no cover - the plan wires files here
        msg = f"input {name} is not a file"
        raise EifbuildError(msg)
    return found


class BootstrapRamdisk(RamdiskNode[BootstrapRamdiskParams]):
    def __init__(self, init: Node[Artifact], nsm: Node[Artifact] | None, **kwargs: Any) -> None:
        super().__init__(layout="bootstrap", **kwargs)
        self.init = init
        self.nsm = nsm
        self.deps = (init,) if nsm is None else (init, nsm)

    def inputs(self) -> dict[str, Node[Any]]:
        return {"init": self.init} if self.nsm is None else {"init": self.init, "nsm": self.nsm}

    def params(self, inputs: Mapping[str, Result]) -> BootstrapRamdiskParams:
        return BootstrapRamdiskParams(self.mtime, self.compression)

    def entries(self, params: BootstrapRamdiskParams, inputs: Mapping[str, Result]) -> list[Entry]:
        from .. import ramdisk  # noqa: PLC0415 - only needed when packing

        nsm = _artifact(inputs, "nsm").path if "nsm" in inputs else None
        return ramdisk.bootstrap_entries(_artifact(inputs, "init").path, nsm)


@dataclass(frozen=True)
class AppFileInput:
    dest: str
    node: Node[Artifact] | TextNode
    mode: int | None
    executable: bool  # compiled programs default to 0755

    @property
    def origin(self) -> Literal["file", "text", "compiled"]:
        if isinstance(self.node, TextNode):
            return "text"
        return "compiled" if self.executable else "file"


@dataclass(frozen=True)
class InjectedFile:
    """A file the app ramdisk gains whatever its inputs say (the test hook of ``doit check``)."""

    path: str
    text: str


class AppRamdisk(RamdiskNode[AppRamdiskParams]):
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

    def params(self, inputs: Mapping[str, Result]) -> AppRamdiskParams:
        rootfs = inputs.get("rootfs")
        argv, env = self.command(rootfs.image if isinstance(rootfs, ResolvedImage) else None)
        return AppRamdiskParams(
            mtime=self.mtime,
            compression=self.compression,
            cmd=tuple(argv),
            env=tuple(env),
            modes=self.modes,
            files=tuple(AppFile(f.dest, f.mode, f.origin) for f in self.files),
            inject=None if self.inject is None else (self.inject.path, self.inject.text),
        )

    def entries(self, params: AppRamdiskParams, inputs: Mapping[str, Result]) -> list[Entry]:
        from .. import oci, ramdisk  # noqa: PLC0415 - only needed when packing

        found = inputs.get("rootfs")
        rootfs: Path | list[Entry] = []
        if isinstance(found, ResolvedImage):
            rootfs = oci.rootfs_entries(found.image, self.store)
        elif found is not None:
            rootfs = _artifact(inputs, "rootfs").path
        files = {f.dest.lstrip("/"): _file_spec(f, inputs[f"file:{f.dest}"]) for f in params.files}
        if params.inject is not None:
            files[params.inject[0]] = params.inject[1].encode()
        return ramdisk.app_entries(
            rootfs, list(params.cmd), list(params.env), modes=params.modes, files=files or None
        )


def _file_spec(item: AppFile, found: Result) -> Entry | Path | bytes:
    rel = item.dest.lstrip("/")
    if isinstance(found, InlineText):
        return Entry.file(rel, found.data, mode=0o644 if item.mode is None else item.mode)
    if not isinstance(found, Artifact):  # pragma: no cover - the plan wires files here
        msg = f"input file:{item.dest} is not a file"
        raise EifbuildError(msg)
    if found.path.is_dir():
        return found.path
    mode = item.mode if item.mode is not None else 0o755 if item.origin == "compiled" else None
    return found.path if mode is None else Entry.file(rel, found.path, mode=mode)
