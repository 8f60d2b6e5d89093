"""The build plan of an eif.toml: per arch, a small graph of store steps whose keys are cheap to know.

Every node can say what its store key is *without building anything*, from the digests of its
inputs: pins of recipe sources, stat-fingerprinted digests of project files, and the recorded output
digests of the nodes it depends on (``node.py``). doit (``tasks.py``) only schedules these nodes;
the store is the source of truth. The nodes, by module:

- ``inputs.py``: :class:`SourceNode` (a pinned recipe source), :class:`LocalNode` (a project file or
  directory, hashed, not copied), :class:`TextNode` (inline text), :class:`CompileNode` (C sources
  → a static binary with zig), :class:`OciNode` (an OCI image resolved into the store);
- ``ramdisks.py``: :class:`BootstrapRamdisk` and :class:`AppRamdisk` (store step ``ramdisk``);
- ``eifnode.py``: :class:`EifNode`, the EIF and its PCR JSON (store step ``eif``), published into
  the output dir.

After an EIF is published, :meth:`Plan.build` records every store entry the build uses as the
project's gc roots, so ``eifbuild store gc`` keeps what the last build used.
"""

from __future__ import annotations

import dataclasses
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar, cast

from ..errors import ConfigError, FileAccessError
from ..sources import LOCK_COMMAND, Lock, load_recipe
from ..store import Store
from ..toolchain import EIFBUILD_INIT_C
from ..util.fsutil import hash_file
from .config import NO_NSM, ORIGIN_ENV, OUTSIDE_KEY, Builtin, Compile, PathInput, SourceRef, TextInput
from .eifnode import EifNode
from .inputs import CompileNode, LocalNode, LockedManifest, OciNode, SourceNode, TextNode
from .ramdisks import AppFileInput, AppRamdisk, BootstrapRamdisk, InjectedFile
from .treedigest import FileDigests

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ..arch import Arch
    from ..ramdisk import Compression
    from ..sources import Recipe
    from .config import Project
    from .node import Artifact, Node

_N = TypeVar("_N", bound="Node[Any]")


# -- planning --------------------------------------------------------------------------------------
class Plan:
    """Every node an eif.toml asks for, per arch, sharing nodes where arches share inputs."""

    def __init__(
        self, project: Project, store: Store | None = None, *, inject_time: str | None = None
    ) -> None:
        """``inject_time``: a path in the app ramdisk that gets the current time (a test hook, see
        ``tasks.INJECT_TIME_ENV``)."""
        self.project = project
        self.store = store if store is not None else Store.for_project(project.root)
        self.inject_time = inject_time
        self.recipes = self._load_recipes()
        self.recipe_digests = {name: hash_file(r.path) for name, r in sorted(self.recipes.items())}
        self.lock = Lock.load(project.lock_file)
        self.digests = FileDigests(self.store.root / "fingerprints" / "files.json")
        self._nodes: dict[tuple[Any, ...], Node[Any]] = {}
        self.eifs: dict[Arch, EifNode] = {arch: self._plan(arch) for arch in project.arches}

    @property
    def roots_file(self) -> Path:
        return self.store.root / "roots" / f"{FileDigests.path_id(self.project.path)}.json"

    def build(self, node: Node[Any]) -> None:
        """Realize ``node`` (doit built its deps before); publishing an EIF records the gc roots."""
        node.build()
        if isinstance(node, EifNode):
            self.write_roots()

    def store_keys(self) -> set[str]:
        """The store entries of every node that is built."""
        keys: set[str] = set()
        for node in self.nodes():
            result = node.cached()
            if result is not None:
                keys |= result.store_keys()
        return keys

    def write_roots(self) -> None:
        """Record every store entry this project's build uses, so ``eifbuild store gc`` keeps them."""
        self.store.write_roots(self.roots_file.stem, self.store_keys())

    def _load_recipes(self) -> dict[str, Recipe]:
        recipes: dict[str, Recipe] = {}
        for i, path in enumerate(self.project.recipes):
            if not path.is_file():
                msg = f"recipe file {path} does not exist"
                raise FileAccessError(msg, path=self.project.path, key=f"eif.recipes[{i}]")
            recipe = load_recipe(path)
            if recipe.name in recipes:
                msg = f"two recipes are named {recipe.name!r}: {recipes[recipe.name].path} and {path}"
                raise ConfigError(msg, path=self.project.path, key=f"eif.recipes[{i}]")
            recipes[recipe.name] = recipe
        return recipes

    def nodes(self) -> list[Node[Any]]:
        """Every node once, dependencies first."""
        ordered: dict[int, Node[Any]] = {}

        def visit(node: Node[Any]) -> None:
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
            msg = f"{exc.reason} ({recipe.path})"
            raise ConfigError(msg, path=self.project.path, key=key) from None
        if not source.pins.pinned:
            from ..sources import unpinned_error  # noqa: PLC0415

            raise unpinned_error(source, self.lock)
        local = source.local_path
        if local is not None:
            where = self._project_path(local, key, what=f"the path of source {source.label}")
            if where != local:
                source = dataclasses.replace(source, path=str(where))
        return self._memo(
            ("source", source.recipe, source.qualified_name), lambda: SourceNode(source, self.store)
        )

    def _local(self, path: Path, what: str) -> LocalNode:
        return self._memo(("local", path), lambda: LocalNode(path, self.digests, what=what))

    def _project_path(self, path: Path, key: str, *, what: str = "") -> Path:
        """``path`` if it is inside the project after resolving links; outside it, only with
        ``[eif] allow_paths_outside = true`` (the self-check's copy then reads the original's file,
        as the build did: :data:`ORIGIN_ENV` names the original project)."""
        root = self.project.root.resolve()
        if path.resolve().is_relative_to(root):
            return path
        if not self.project.allow_paths_outside:
            named = f" ({what})" if what else ""
            msg = (
                f"{path}{named} is outside the project {root} (after resolving links): refused; "
                f"set [eif] {OUTSIDE_KEY} = true to read it"
            )
            raise ConfigError(msg, path=self.project.path, key=key)
        origin = os.environ.get(ORIGIN_ENV)
        if not origin:
            return path
        return (Path(origin) / os.path.relpath(path, self.project.root)).resolve()

    def _role(self, role: str, arch: Arch) -> SourceRef | None:
        """The source a recipe's [defaults] names for ``role`` (first recipe in eif.toml order)."""
        for recipe in self.recipes.values():
            name = recipe.defaults_for(arch).get(role)
            if isinstance(name, str):
                return SourceRef(recipe.name, name)
        return None

    def _file(self, spec: SourceRef | PathInput, arch: Arch, key: str) -> SourceNode | LocalNode:
        if isinstance(spec, SourceRef):
            return self._source(spec, arch, key)
        return self._local(self._project_path(spec.path, key), key)

    def _input(
        self, spec: SourceRef | PathInput | TextInput, arch: Arch, key: str
    ) -> SourceNode | LocalNode | TextNode:
        return TextNode(spec.text) if isinstance(spec, TextInput) else self._file(spec, arch, key)

    def _compile(
        self, spec: Compile, arch: Arch, *, label: str, output: str, cflags: Sequence[str], key: str
    ) -> CompileNode:
        sources: list[Node[Artifact]] = []
        for item in spec.sources:
            if isinstance(item, Builtin):
                sources.append(self._local(EIFBUILD_INIT_C, f"{key} ({item.name})"))
            else:
                sources.append(self._file(item, arch, key))
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

    def _kernel(self, arch: Arch) -> SourceNode | LocalNode:
        spec = self.project.bootstrap.kernel or self._role("kernel", arch)
        if spec is None:
            error = self._missing("kernel", hint="e.g. recipes/demo.toml")
            raise error
        return self._file(spec, arch, "bootstrap.kernel")

    def _kernel_config(self, arch: Arch) -> SourceNode | LocalNode | None:
        spec = self.project.bootstrap.kernel_config or self._role("kernel_config", arch)
        return None if spec is None else self._file(spec, arch, "bootstrap.kernel_config")

    def _init(self, arch: Arch) -> Node[Artifact]:
        spec = self.project.bootstrap.init or self._role("init", arch)
        if spec is None:
            source = self._role("init_source", arch)
            spec = None if source is None else Compile((source,))
        if spec is None:
            error = self._missing("init", hint='e.g. init = { compile = "eifbuild-init" }')
            raise error
        if isinstance(spec, Compile):
            from ..toolchain import INIT_CFLAGS  # noqa: PLC0415

            return self._compile(
                spec, arch, label="init", output="init", cflags=INIT_CFLAGS, key="bootstrap.init"
            )
        return self._file(spec, arch, "bootstrap.init")

    def _nsm(self, arch: Arch) -> SourceNode | LocalNode | None:
        spec = self.project.bootstrap.nsm
        if spec == NO_NSM:
            return None
        spec = spec or self._role("nsm", arch)
        return None if spec is None else self._file(spec, arch, "bootstrap.nsm")

    def _cmdline(self, arch: Arch) -> str | SourceNode:
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

    def _oci(self, ref: str, arch: Arch) -> OciNode:
        """The image node; a registry tag is replaced by the digest eif.lock recorded for it."""
        from .. import oci  # noqa: PLC0415 - registry code only for OCI projects

        tag = oci.registry_tag(ref, self.project.root)
        locked = None
        if tag is not None:
            entry = self.lock.image(ref)
            manifest = None if entry is None else entry.manifests.get(arch)
            if entry is None or manifest is None:
                what = "no pin" if entry is None else f"no {arch} manifest"
                msg = (
                    f"image {ref!r} is a tag (it can move) with {what} in {self.lock.path}: run "
                    f"'{LOCK_COMMAND}' to resolve it and record its digest"
                )
                raise ConfigError(msg, path=self.project.path, key="app.oci")
            ref = str(tag.pinned(entry.digest))
            locked = LockedManifest(manifest, self.lock.path, tag=self.project.app.oci or "")
        return OciNode(ref, arch=arch, store=self.store, project_dir=self.project.root, locked=locked)

    def _app(self, arch: Arch, compression: Compression) -> AppRamdisk:
        app = self.project.app
        rootfs: OciNode | LocalNode | None = None
        if app.oci is not None:
            rootfs = self._memo(("oci", app.oci, arch), lambda: self._oci(app.oci or "", arch))
        elif app.rootfs is not None:
            rootfs = self._local(self._project_path(app.rootfs, "app.rootfs"), "app.rootfs")
        files = []
        for item in app.files:
            key = f"app.files.{item.dest}"
            if isinstance(item.input, Compile):
                node: Node[Artifact] | TextNode = self._compile(
                    item.input, arch, label=item.dest, output=item.dest.rsplit("/", 1)[1], cflags=(), key=key
                )
            else:
                node = self._input(item.input, arch, key)
            files.append(AppFileInput(item.dest, node, item.mode, isinstance(item.input, Compile)))
        inject = None
        if self.inject_time:
            inject = InjectedFile(self.inject_time.strip("/"), str(time.time_ns()))
        return AppRamdisk(
            rootfs=rootfs,
            files=files,
            cmd=app.cmd,
            env=app.env,
            modes=app.modes,
            inject=inject,
            arch=arch,
            mtime=self.project.build_time.epoch,
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
            "mtime": self.project.build_time.epoch,
            "compression": compression,
            "store": self.store,
        }
        bootstrap = BootstrapRamdisk(init, nsm, **common)
        app = self._app(arch, compression)
        cmdline = self._cmdline(arch)
        sign = self.project.sign
        certificate = None if sign is None else self._local(sign.certificate, "sign.certificate")
        roles: list[tuple[str, Node[Any] | None]] = [
            ("kernel", kernel),
            ("kernel_config", config),
            ("init", init),
        ]
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
            recipe_paths={name: r.path for name, r in self.recipes.items()},
        )


def _label(node: Node[Any], root: Path) -> str:
    if isinstance(node, SourceNode):
        return f"{node.source.recipe}.{node.source.qualified_name}"
    if isinstance(node, LocalNode):
        if node.path == EIFBUILD_INIT_C:
            return "eifbuild/init/init.c"
        return Path(os.path.relpath(node.path, root)).as_posix()
    return node.task
