"""The build plan of an eif.toml: per arch, a small graph of store steps whose keys are cheap to know.

Every node can say what its store key is *without building anything* (:meth:`Node.key`), from the
digests of its inputs: pins of recipe sources, stat-fingerprinted digests of project files, and the
recorded output digests of the nodes it depends on. A node is current when the store holds its key
(:meth:`Node.cached`); :meth:`Node.build` realizes it. doit (``tasks.py``) only schedules these nodes;
the store is the source of truth. Nodes:

- :class:`SourceNode`: a pinned recipe source (store step ``source``);
- :class:`LocalNode`: a file or directory of the project, hashed, not copied into the store;
- :class:`CompileNode`: C sources → a static binary with zig (store step ``zig-cc``);
- :class:`OciNode`: an OCI image resolved into the store;
- :class:`RamdiskNode`: the bootstrap or app ramdisk (store step ``ramdisk``);
- :class:`EifNode`: the EIF and its PCR JSON (store step ``eif``), published into the output dir.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar, cast

from .. import __version__, log
from ..errors import ConfigError, EifbuildError
from ..ramdisk.newc import Entry, eif_alignment, write_cpio_file
from ..sources.lock import Lock
from ..sources.recipe import load_recipe
from ..store import Step, Store, canonical_json
from ..util.fsutil import atomic_write, hash_file
from .config import EIFBUILD_INIT_C, NO_NSM, Builtin, Compile, PathInput, Project, SourceRef, TextInput
from .treedigest import FileDigests, tree_digest

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from ..arch import Arch
    from ..oci import image as oci
    from ..sources.recipe import Recipe, Source
    from ..store import StoreEntry
    from .config import Modes

BUILD_TOOL: Final = "eifbuild"
RAMDISK_STEP_VERSION: Final = 1
EIF_STEP_VERSION: Final = 1
# A documented test hook: `doit check` must notice a step that is not deterministic. When set, the
# app ramdisk gains this file holding the current time (and its key a nonce, so it is rebuilt).
INJECT_TIME_ENV: Final = "EIFBUILD_TEST_INJECT_TIME"


_N = TypeVar("_N", bound="Node")


@dataclass(frozen=True)
class Artifact:
    """What a node produced: a file (or a directory for trees) and its content digest."""

    path: Path
    sha256: str
    key: str | None = None


class Node:
    """A build step of the plan. Subclasses set ``task`` (doit name) and ``deps``."""

    task: str = ""
    doc: str = ""
    deps: tuple[Node, ...] = ()
    store: Store  # set by the nodes whose step runs in the store

    def __init__(self) -> None:
        self._artifact: Artifact | None = None

    def key(self) -> str | None:
        """The store key, or None while an input is not built yet."""
        step = self.step()
        return None if step is None else step.key

    def step(self) -> Step | None:
        raise NotImplementedError

    def _stored(self) -> StoreEntry | None:
        """The store entry of this node's step, if its inputs are built and it was run before."""
        key = self.key()
        return self.store.get(key) if key else None

    def cached(self) -> Artifact | None:
        """The artifact if it exists already; never builds or downloads."""
        if self._artifact is None:
            self._artifact = self._lookup()
        return self._artifact

    def _lookup(self) -> Artifact | None:
        raise NotImplementedError

    def build(self) -> Artifact:
        """Realize this node (its deps must have been built)."""
        if self._artifact is None:
            self._artifact = self._realize()
        return self._artifact

    def _realize(self) -> Artifact:
        raise NotImplementedError

    def current(self) -> bool:
        try:
            return self.cached() is not None
        except EifbuildError:
            return False  # the action will raise it again, with its message

    def _step_after_deps(self) -> Step:
        """This node's step once every dependency is realized (built, if doit has not yet)."""
        for dep in self.deps:
            dep.require()
        step = self.step()
        if step is None:  # pragma: no cover - every input was just built
            msg = f"{self.task}: an input is missing"
            raise EifbuildError(msg)
        return step

    def require(self) -> Artifact:
        """The artifact of a dependency, which doit has built before us."""
        found = self.cached()
        if found is None:
            found = self.build()
        return found


def _dep_digests(nodes: Mapping[str, Node]) -> dict[str, str] | None:
    found = {}
    for name, node in nodes.items():
        artifact = node.cached()
        if artifact is None:
            return None
        found[name] = artifact.sha256
    return found


# -- leaves ----------------------------------------------------------------------------------------
class SourceNode(Node):
    def __init__(self, source: Source, store: Store) -> None:
        super().__init__()
        self.source = source
        self.store = store
        self.task = f"fetch:{source.recipe}.{source.qualified_name}"
        self.doc = f"fetch and verify {source.origin}"

    def step(self) -> Step:
        return self.source.step()

    def _lookup(self) -> Artifact | None:
        if not self.source.pins.pinned:
            return None
        entry = self.store.get(self.source.step().key)
        if entry is None:
            return None
        return Artifact(self.source.output_path(entry), str(entry.meta["sha256"]), entry.key)

    def _realize(self) -> Artifact:
        from ..sources import fetch_source  # noqa: PLC0415 - network code only when something is fetched

        fetched = fetch_source(self.source, store=self.store)
        return Artifact(fetched.path, fetched.sha256, fetched.key)


class LocalNode(Node):
    """A file or directory of the project: digested, never copied."""

    def __init__(self, path: Path, digests: FileDigests, store: Store, *, what: str) -> None:
        super().__init__()
        self.path = path
        self.digests = digests
        self.store = store
        self.what = what

    def step(self) -> Step | None:
        return None

    def _lookup(self) -> Artifact:
        if self.path.is_dir():
            cache = self.store.root / "fingerprints" / f"tree-{self.digests.path_id(self.path)}.json"
            return Artifact(self.path, tree_digest(self.path, cache_path=cache).digest)
        if not self.path.is_file():
            msg = f"{self.what}: no such file or directory"
            raise ConfigError(msg, path=self.path)
        return Artifact(self.path, self.digests.digest(self.path))

    def _realize(self) -> Artifact:
        return self._lookup()


class TextNode(Node):
    """File content written inline in eif.toml."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.data = text.encode()
        self._artifact = Artifact(Path(), hashlib.sha256(self.data).hexdigest())

    def step(self) -> Step | None:
        return None

    def _lookup(self) -> Artifact | None:
        return self._artifact


# -- compile ---------------------------------------------------------------------------------------
class CompileNode(Node):
    def __init__(
        self,
        sources: Sequence[Node],
        *,
        arch: Arch,
        cflags: Sequence[str],
        output: str,
        label: str,
        store: Store,
    ) -> None:
        super().__init__()
        self.deps = tuple(sources)
        self.arch = arch
        self.cflags = tuple(cflags)
        self.output = output
        self.store = store
        self.task = f"compile:{label}:{arch}"
        self.doc = f"compile {label} for {arch} with zig"

    def _paths(self) -> list[Path] | None:
        found = [d.cached() for d in self.deps]
        return None if any(a is None for a in found) else [a.path for a in found if a is not None]

    def step(self) -> Step | None:
        paths = self._paths()
        if paths is None:
            return None
        from ..toolchain import zig as toolchain  # noqa: PLC0415 - zig's code only for projects that compile

        return toolchain.compile_step(paths, arch=self.arch, cflags=self.cflags, output_name=self.output)

    def _lookup(self) -> Artifact | None:
        entry = self._stored()
        return None if entry is None else _entry_file(entry, self.output)

    def _realize(self) -> Artifact:
        paths = [d.require().path for d in self.deps]
        from ..toolchain import zig as toolchain  # noqa: PLC0415 - it logs the compile (and musl's first build) itself

        entry = toolchain.compile_c(
            self.store, paths, arch=self.arch, cflags=self.cflags, output_name=self.output
        )
        return _entry_file(entry, self.output)


def _entry_file(entry: StoreEntry, name: str) -> Artifact:
    return Artifact(entry.file(name), entry.digest(name), entry.key)


# -- OCI -------------------------------------------------------------------------------------------
class OciNode(Node):
    """An OCI image for one arch; its digest is the image's rootfs digest (same from any transport)."""

    def __init__(self, ref: str, *, arch: Arch, store: Store, project_dir: Path) -> None:
        super().__init__()
        self.ref = ref
        self.arch = arch
        self.store = store
        self.project_dir = project_dir
        self.image: oci.OciImage | None = None
        self.task = f"fetch:oci:{arch}"
        self.doc = f"resolve {ref} for {arch} and verify its blobs into the store"

    def step(self) -> Step | None:
        return None

    def _lookup(self) -> Artifact | None:
        from ..oci import image as oci  # noqa: PLC0415 - registry code only for OCI projects

        image = oci.cached_image(self.ref, arch=self.arch, store=self.store, project_dir=self.project_dir)
        return None if image is None else self._use(image)

    def _realize(self) -> Artifact:
        from ..oci import image as oci  # noqa: PLC0415

        image = oci.resolve_image(self.ref, arch=self.arch, store=self.store, project_dir=self.project_dir)
        return self._use(image)

    def _use(self, image: oci.OciImage) -> Artifact:
        self.image = image
        return Artifact(Path(), image.rootfs_digest.removeprefix("sha256:"))


# -- ramdisks --------------------------------------------------------------------------------------
class RamdiskNode(Node):
    """A canonical cpio archive in the store (output ``ramdisk.cpio``)."""

    OUTPUT: Final = "ramdisk.cpio"

    def __init__(self, *, layout: str, arch: Arch, mtime: int, compression: str, store: Store) -> None:
        super().__init__()
        self.layout = layout
        self.arch = arch
        self.mtime = mtime
        self.compression = compression
        self.store = store
        self.task = f"ramdisk:{layout}:{arch}"
        self.doc = f"pack the {layout} ramdisk for {arch}"

    def inputs(self) -> dict[str, Node]:
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "mtime": self.mtime,
            "compression": self.compression,
            "align": eif_alignment([self.compression]),  # type: ignore[list-item]
        }

    def step(self) -> Step | None:
        digests = _dep_digests(self.inputs())
        if digests is None:
            return None
        return Step("ramdisk", RAMDISK_STEP_VERSION, self.params(), digests)

    def _lookup(self) -> Artifact | None:
        entry = self._stored()
        return None if entry is None else _entry_file(entry, self.OUTPUT)

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

        return _entry_file(self.store.realize(step, write), self.OUTPUT)


class BootstrapRamdisk(RamdiskNode):
    def __init__(self, init: Node, nsm: Node | None, **kwargs: Any) -> None:
        super().__init__(layout="bootstrap", **kwargs)
        self.init = init
        self.nsm = nsm
        self.deps = (init,) if nsm is None else (init, nsm)

    def inputs(self) -> dict[str, Node]:
        return {"init": self.init} if self.nsm is None else {"init": self.init, "nsm": self.nsm}

    def entries(self) -> list[Entry]:
        from ..ramdisk import layout as ramdisk  # noqa: PLC0415 - only needed when packing

        nsm = None if self.nsm is None else self.nsm.require().path
        return ramdisk.bootstrap_entries(self.init.require().path, nsm)


@dataclass(frozen=True)
class AppFileInput:
    dest: str
    node: Node
    mode: int | None
    executable: bool  # compiled programs default to 0755


class AppRamdisk(RamdiskNode):
    def __init__(
        self,
        *,
        rootfs: Node | None,
        files: Sequence[AppFileInput],
        cmd: Sequence[str] | None,
        env: Sequence[tuple[str, str]] | None,
        modes: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(layout="app", **kwargs)
        self.rootfs = rootfs
        self.files = tuple(files)
        self.cmd = None if cmd is None else tuple(cmd)
        self.env = env
        self.modes = modes
        self.deps = tuple(n for n in (rootfs, *(f.node for f in files)) if n is not None)
        inject = os.environ.get(INJECT_TIME_ENV)
        self.inject = (inject.strip("/"), str(time.time_ns())) if inject else None

    def inputs(self) -> dict[str, Node]:
        found: dict[str, Node] = {} if self.rootfs is None else {"rootfs": self.rootfs}
        found.update({f"file:{f.dest}": f.node for f in self.files})
        return found

    def command(self) -> tuple[list[str], list[str]]:
        """argv and env lines (the image's defaults under eif.toml's overrides for OCI images)."""
        env = None if self.env is None else dict(self.env)
        if isinstance(self.rootfs, OciNode):
            image = self.rootfs.image
            if image is None:  # pragma: no cover - cached()/build() set it
                msg = f"{self.rootfs.ref}: image not resolved"
                raise EifbuildError(msg)
            from ..oci import image as oci  # noqa: PLC0415

            argv_t, env_t = oci.app_command(image, self.cmd, env)
            return list(argv_t), list(env_t)
        argv = list(self.cmd or ())
        return argv, [f"{k}={v}" for k, v in (env or {}).items()]

    def params(self) -> dict[str, Any]:
        argv, env = self.command()
        files = {f.dest: f.mode for f in self.files}
        return {
            **super().params(),
            "cmd": argv,
            "env": env,
            "modes": self.modes,
            "files": files,
            "inject": self.inject,
        }

    def _file_spec(self, item: AppFileInput) -> Entry | Path | bytes:
        rel = item.dest.lstrip("/")
        if isinstance(item.node, TextNode):
            return Entry.file(rel, item.node.data, mode=0o644 if item.mode is None else item.mode)
        path = item.node.require().path
        if path.is_dir():
            return path
        mode = item.mode if item.mode is not None else 0o755 if item.executable else None
        return path if mode is None else Entry.file(rel, path, mode=mode)

    def entries(self) -> list[Entry]:
        argv, env = self.command()
        from ..oci import image as oci  # noqa: PLC0415 - only needed when packing
        from ..ramdisk import layout as ramdisk  # noqa: PLC0415 - only needed when packing

        rootfs: Path | list[Entry]
        if isinstance(self.rootfs, OciNode):
            image = self.rootfs.image
            rootfs = [] if image is None else oci.rootfs_entries(image, self.store)
        elif self.rootfs is not None:
            rootfs = self.rootfs.require().path
        else:
            rootfs = []
        files: dict[str, Entry | Path | bytes] = {f.dest.lstrip("/"): self._file_spec(f) for f in self.files}
        if self.inject is not None:
            files[self.inject[0]] = self.inject[1].encode()
        modes: Modes = "preserve" if self.modes == "preserve" else "normalize"
        return ramdisk.app_entries(rootfs, argv, env, modes=modes, files=files or None)


# -- the EIF ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Published:
    eif: Path
    pcrs: Path


class EifNode(Node):
    """The EIF and its PCR JSON: built in the store, then linked (or copied) into the output dir."""

    def __init__(
        self,
        *,
        project: Project,
        arch: Arch,
        kernel: Node,
        kernel_config: Node | None,
        cmdline: str | Node,
        ramdisks: Sequence[Node],
        certificate: Node | None,
        labels: Mapping[str, Node],
        recipe_digests: Mapping[str, str],
        store: Store,
    ) -> None:
        super().__init__()
        self.project = project
        self.arch = arch
        self.kernel = kernel
        self.kernel_config = kernel_config
        self.cmdline = cmdline
        self.ramdisks = tuple(ramdisks)
        self.certificate = certificate
        self.labels = dict(labels)
        self.recipe_digests = dict(recipe_digests)
        self.store = store
        named = [
            kernel,
            kernel_config,
            *ramdisks,
            certificate,
            cmdline if isinstance(cmdline, Node) else None,
        ]
        self.deps = tuple(dict.fromkeys(n for n in (*named, *labels.values()) if n is not None))
        stem = f"{project.name}-{arch}"
        self.out = Published(project.output / f"{stem}.eif", project.output / f"{stem}.pcr.json")
        self.task = f"eif:{arch}"
        self.doc = f"write {os.path.relpath(self.out.eif, project.root)} and its PCRs"
        self.measurements: dict[str, str] = {}
        self.on_built: Callable[[], None] | None = None
        self.on_current: Callable[[], None] | None = None

    def _cmdline_text(self) -> str | None:
        if isinstance(self.cmdline, str):
            return self.cmdline
        found = self.cmdline.cached()
        if found is None:
            return None
        # like nitro-cli, which trims its blobs/<arch>/cmdline file
        return found.path.read_text(encoding="utf-8").strip()

    def _custom_metadata(self) -> dict[str, Any] | None:
        inputs = _dep_digests(self.labels)
        if inputs is None:
            return None
        ours = {"inputs": dict(sorted(inputs.items())), "recipes": self.recipe_digests}
        return {**(self.project.metadata or {}), BUILD_TOOL: ours}

    def step(self) -> Step | None:
        named: dict[str, Node] = {"kernel": self.kernel}
        named.update({f"ramdisk/{i}": r for i, r in enumerate(self.ramdisks)})
        if self.kernel_config is not None:
            named["kernel_config"] = self.kernel_config
        if self.certificate is not None:
            named["certificate"] = self.certificate
        digests = _dep_digests(named)
        cmdline = self._cmdline_text()
        custom = self._custom_metadata()
        if digests is None or cmdline is None or custom is None:
            return None
        params = {
            "arch": self.arch,
            "cmdline": cmdline,
            "name": self.project.name,
            "version": self.project.version,
            "build_time": self.project.build_time,
            "build_tool": BUILD_TOOL,
            "build_tool_version": __version__,
            "custom": custom,
            "signed": self.certificate is not None,
        }
        return Step("eif", EIF_STEP_VERSION, params, digests)

    def current(self) -> bool:
        found = super().current()
        if found and self.on_current is not None:
            self.on_current()
        return found

    def _stamp_path(self) -> Path:
        return self.store.root / "stamps" / f"{FileDigests.path_id(self.out.eif)}.json"

    def _published(self, key: str) -> bool:
        """The output dir holds exactly what the store entry ``key`` holds (by stamp, no hashing)."""
        try:
            stamp = json.loads(self._stamp_path().read_bytes())
            return bool(stamp == self._stamp(key))
        except (OSError, ValueError):
            return False

    def _stamp(self, key: str) -> dict[str, Any]:
        """What the stamp file holds: the key and the fingerprints of the published outputs."""
        return {"key": key, "eif": _fingerprint(self.out.eif), "pcrs": _fingerprint(self.out.pcrs)}

    def _lookup(self) -> Artifact | None:
        entry = self._stored()
        if entry is None or not self._published(entry.key):
            return None
        self.measurements = dict(entry.meta.get("pcrs", {}))
        return Artifact(self.out.eif, entry.digest("image.eif"), entry.key)

    def _realize(self) -> Artifact:
        step = self._step_after_deps()
        entry = self.store.get(step.key)
        if entry is not None and self.store.check(entry):
            # the published copy is a hard link: an edit of it in place reaches the store too
            log.warn(f"store entry {entry.key[:12]} of {self.task} was modified; building it again")
            self.store.remove(entry.key)
            entry = None
        if entry is None:
            log.step(f"write the {self.arch} EIF")
            entry = self.store.realize(step, lambda out: self._write(step, out))
        self._publish(entry)
        self.measurements = dict(entry.meta.get("pcrs", {}))
        self._artifact = Artifact(self.out.eif, entry.digest("image.eif"), entry.key)
        if self.on_built is not None:
            self.on_built()
        return self._artifact

    def _write(self, step: Step, out: Path) -> dict[str, Any]:
        from ..eif.metadata import make_metadata  # noqa: PLC0415
        from ..eif.sign import Signer  # noqa: PLC0415
        from ..eif.writer import write_eif  # noqa: PLC0415 - format and crypto code only when writing

        params = step.params
        kernel = self.kernel.require().path
        config = None if self.kernel_config is None else self.kernel_config.require().path
        metadata = make_metadata(
            kernel=kernel,
            name=params["name"],
            version=params["version"],
            build_time=params["build_time"],
            build_tool=BUILD_TOOL,
            build_tool_version=__version__,
            kernel_config=config,
            custom=params["custom"],
        )
        signer = None
        if self.certificate is not None and self.project.sign is not None:
            signer = Signer.from_files(self.certificate.require().path, self.project.sign.key)
        measurements = write_eif(
            out / "image.eif",
            kernel=kernel,
            cmdline=params["cmdline"],
            ramdisks=[r.require().path for r in self.ramdisks],
            metadata=metadata,
            arch=self.arch,
            signer=signer,
        )
        (out / "pcr.json").write_text(json.dumps(measurements.to_json(), indent=2) + "\n")
        return {"pcrs": measurements.pcrs()}

    def _publish(self, entry: StoreEntry) -> None:
        """Link (else copy) the store's files into the output dir, atomically, and stamp them."""
        for name, target in (("image.eif", self.out.eif), ("pcr.json", self.out.pcrs)):
            _link_or_copy(entry.file(name), target)
        with atomic_write(self._stamp_path()) as fh:
            fh.write(canonical_json(self._stamp(entry.key)))

    def summary(self) -> str:
        from ..eif.writer import min_enclave_memory_mib  # noqa: PLC0415

        size = self.out.eif.stat().st_size
        pcrs = "\n".join(f"  {name}: {value}" for name, value in self.measurements.items())
        rel = os.path.relpath(self.out.eif, Path.cwd())
        memory = min_enclave_memory_mib(size)
        return f"{rel} ({size:,} bytes; run it with at least {memory} MiB of enclave memory)\n{pcrs}"


def _fingerprint(path: Path) -> list[int]:
    st = path.stat()
    return [st.st_size, st.st_mtime_ns, st.st_ino, st.st_dev]


def _link_or_copy(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        try:
            os.link(source, tmp)
        except OSError:  # another filesystem, or links not allowed: copy
            with open(source, "rb") as src, atomic_write(tmp) as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        os.replace(tmp, target)
    finally:
        if os.path.lexists(tmp):
            os.unlink(tmp)


# -- planning --------------------------------------------------------------------------------------
class Plan:
    """Every node an eif.toml asks for, per arch, sharing nodes where arches share inputs."""

    def __init__(self, project: Project, store: Store | None = None) -> None:
        self.project = project
        self.store = store if store is not None else Store.for_project(project.root)
        self.recipes = self._load_recipes()
        self.recipe_digests = {name: hash_file(r.path) for name, r in sorted(self.recipes.items())}
        self.lock = Lock.load(project.lock_file)
        self.digests = FileDigests(self.store.root / "fingerprints" / "files.json")
        self._nodes: dict[tuple[Any, ...], Node] = {}
        self.eifs: dict[Arch, EifNode] = {arch: self._plan(arch) for arch in project.arches}
        for eif in self.eifs.values():
            eif.on_built = self.write_roots
            eif.on_current = self._ensure_roots

    @property
    def roots_file(self) -> Path:
        return self.store.root / "roots" / f"{FileDigests.path_id(self.project.path)}.json"

    def _ensure_roots(self) -> None:
        if not self.roots_file.exists():
            self.write_roots()

    def write_roots(self) -> None:
        """Record every store entry this project's build uses, so ``eifbuild store gc`` keeps them."""
        keys: set[str] = set()
        for node in self.nodes():
            artifact = node.cached()
            if artifact is not None and artifact.key:
                keys.add(artifact.key)
            if isinstance(node, OciNode) and node.image is not None:
                keys |= node.image.store_keys()
        self.store.write_roots(self.roots_file.stem, keys)

    def _load_recipes(self) -> dict[str, Recipe]:
        recipes: dict[str, Recipe] = {}
        for i, path in enumerate(self.project.recipes):
            if not path.is_file():
                msg = f"recipe file {path} does not exist"
                raise ConfigError(msg, path=self.project.path, key=f"eif.recipes[{i}]")
            recipe = load_recipe(path)
            if recipe.name in recipes:
                msg = f"two recipes are named {recipe.name!r}: {recipes[recipe.name].path} and {path}"
                raise ConfigError(msg, path=self.project.path, key=f"eif.recipes[{i}]")
            recipes[recipe.name] = recipe
        return recipes

    def nodes(self) -> list[Node]:
        """Every node once, dependencies first."""
        ordered: dict[int, Node] = {}

        def visit(node: Node) -> None:
            if id(node) in ordered:
                return
            for dep in node.deps:
                visit(dep)
            ordered[id(node)] = node

        for eif in self.eifs.values():
            visit(eif)
        return list(ordered.values())

    # -- references ----------------------------------------------------------------------------
    def _memo(self, key: tuple[Any, ...], make: Callable[[], _N]) -> _N:
        node = self._nodes.get(key)
        if node is None:
            node = self._nodes[key] = make()
        return cast("_N", node)

    def _source(self, ref: SourceRef, arch: Arch, key: str) -> SourceNode:
        recipe = self.recipes.get(ref.recipe)
        if recipe is None:
            known = ", ".join(sorted(self.recipes)) or "none"
            msg = f"no recipe named {ref.recipe!r} (recipes: {known}): add its file to [eif] recipes"
            raise ConfigError(msg, path=self.project.path, key=key)
        try:
            source = self.lock.apply(recipe.source(ref.source, arch))
        except ConfigError as exc:
            msg = f"{exc.message.split(': ', 1)[-1]} ({recipe.path})"
            raise ConfigError(msg, path=self.project.path, key=key) from None
        if not source.pins.pinned:
            from ..sources.fetch import unpinned_error  # noqa: PLC0415

            raise unpinned_error(source, self.lock)
        return self._memo(
            ("source", source.recipe, source.qualified_name), lambda: SourceNode(source, self.store)
        )

    def _local(self, path: Path, what: str) -> LocalNode:
        return self._memo(("local", path), lambda: LocalNode(path, self.digests, self.store, what=what))

    def _role(self, role: str, arch: Arch) -> SourceRef | None:
        """The source a recipe's [defaults] names for ``role`` (first recipe in eif.toml order)."""
        for recipe in self.recipes.values():
            name = recipe.defaults_for(arch).get(role)
            if isinstance(name, str):
                return SourceRef(recipe.name, name)
        return None

    def _input(self, spec: SourceRef | PathInput | TextInput, arch: Arch, key: str) -> Node:
        if isinstance(spec, SourceRef):
            return self._source(spec, arch, key)
        if isinstance(spec, PathInput):
            return self._local(spec.path, key)
        return TextNode(spec.text)

    def _compile(
        self, spec: Compile, arch: Arch, *, label: str, output: str, cflags: Sequence[str], key: str
    ) -> CompileNode:
        sources: list[Node] = []
        for item in spec.sources:
            if isinstance(item, Builtin):
                sources.append(self._local(EIFBUILD_INIT_C, f"{key} ({item.name})"))
            else:
                sources.append(self._input(item, arch, key))
        flags = (*cflags, *spec.cflags)
        return self._memo(
            ("compile", label, arch, tuple(id(s) for s in sources), flags, output),
            lambda: CompileNode(
                sources, arch=arch, cflags=flags, output=output, label=label, store=self.store
            ),
        )

    # -- the parts of one EIF ------------------------------------------------------------------
    def _missing(self, role: str, *, hint: str) -> ConfigError:
        msg = f"no {role}: set it in [bootstrap] or list a recipe whose [defaults] names one ({hint})"
        return ConfigError(msg, path=self.project.path, key=f"bootstrap.{role}")

    def _kernel(self, arch: Arch) -> Node:
        spec = self.project.bootstrap.kernel or self._role("kernel", arch)
        if spec is None:
            error = self._missing("kernel", hint="e.g. recipes/demo.toml")
            raise error
        return self._input(spec, arch, "bootstrap.kernel")

    def _kernel_config(self, arch: Arch) -> Node | None:
        spec = self.project.bootstrap.kernel_config or self._role("kernel_config", arch)
        return None if spec is None else self._input(spec, arch, "bootstrap.kernel_config")

    def _init(self, arch: Arch) -> Node:
        spec = self.project.bootstrap.init or self._role("init", arch)
        if spec is None:
            source = self._role("init_source", arch)
            spec = None if source is None else Compile((source,))
        if spec is None:
            error = self._missing("init", hint='e.g. init = { compile = "eifbuild-init" }')
            raise error
        if isinstance(spec, Compile):
            from ..toolchain.zig import INIT_CFLAGS  # noqa: PLC0415

            return self._compile(
                spec, arch, label="init", output="init", cflags=INIT_CFLAGS, key="bootstrap.init"
            )
        return self._input(spec, arch, "bootstrap.init")

    def _nsm(self, arch: Arch) -> Node | None:
        spec = self.project.bootstrap.nsm
        if spec == NO_NSM:
            return None
        spec = spec or self._role("nsm", arch)
        return None if spec is None else self._input(spec, arch, "bootstrap.nsm")

    def _cmdline(self, arch: Arch) -> str | Node:
        given = self.project.cmdline
        if isinstance(given, SourceRef):
            return self._source(given, arch, "eif.cmdline")
        if given is not None:
            return given[arch]
        source = self._role("cmdline", arch)
        if source is None:
            msg = "no kernel command line: set [eif] cmdline or list a recipe whose [defaults] names one"
            raise ConfigError(msg, path=self.project.path, key="eif.cmdline")
        return self._source(source, arch, "eif.cmdline")

    def _app(self, arch: Arch, compression: str) -> AppRamdisk:
        app = self.project.app
        rootfs: Node | None = None
        if app.oci is not None:
            rootfs = self._memo(
                ("oci", app.oci, arch),
                lambda: OciNode(app.oci or "", arch=arch, store=self.store, project_dir=self.project.root),
            )
        elif app.rootfs is not None:
            rootfs = self._local(app.rootfs, "app.rootfs")
        files = []
        for item in app.files:
            key = f"app.files.{item.dest}"
            if isinstance(item.input, Compile):
                node: Node = self._compile(
                    item.input, arch, label=item.dest, output=item.dest.rsplit("/", 1)[1], cflags=(), key=key
                )
            else:
                node = self._input(item.input, arch, key)
            files.append(AppFileInput(item.dest, node, item.mode, isinstance(item.input, Compile)))
        return AppRamdisk(
            rootfs=rootfs,
            files=files,
            cmd=app.cmd,
            env=app.env,
            modes=app.modes,
            arch=arch,
            mtime=self.project.build_epoch,
            compression=compression,
            store=self.store,
        )

    def _plan(self, arch: Arch) -> EifNode:
        compression = self.project.compression
        kernel, config, init, nsm = (
            self._kernel(arch),
            self._kernel_config(arch),
            self._init(arch),
            self._nsm(arch),
        )
        common = {
            "arch": arch,
            "mtime": self.project.build_epoch,
            "compression": compression,
            "store": self.store,
        }
        bootstrap = BootstrapRamdisk(init, nsm, **common)
        app = self._app(arch, compression)
        cmdline = self._cmdline(arch)
        sign = self.project.sign
        certificate = None if sign is None else self._local(sign.certificate, "sign.certificate")
        roles: list[tuple[str, Node | None]] = [("kernel", kernel), ("kernel_config", config), ("init", init)]
        if isinstance(init, CompileNode):
            roles += [(f"init/{_label(d, self.project.root)}", d) for d in init.deps]
        roles += [("nsm", nsm), ("rootfs", app.rootfs)]
        roles += [(f"file:{f.dest}", f.node) for f in app.files]
        roles += [("ramdisk/bootstrap", bootstrap), ("ramdisk/app", app)]
        return EifNode(
            project=self.project,
            arch=arch,
            kernel=kernel,
            kernel_config=config,
            cmdline=cmdline,
            ramdisks=(bootstrap, app),
            certificate=certificate,
            labels={role: node for role, node in roles if node is not None},
            recipe_digests=self.recipe_digests,
            store=self.store,
        )


def _label(node: Node, root: Path) -> str:
    if isinstance(node, SourceNode):
        return f"{node.source.recipe}.{node.source.qualified_name}"
    if isinstance(node, LocalNode):
        if node.path == EIFBUILD_INIT_C:
            return "eifbuild/init/init.c"
        return Path(os.path.relpath(node.path, root)).as_posix()
    return node.task
