"""eif.toml: an app repo's build description, parsed into frozen records with precise errors.

Every problem is a :class:`ConfigError` naming the file, the dotted key and what was expected;
unknown keys are errors with a did-you-mean. Parsing is pure (:func:`parse_project` takes the TOML
text); :func:`load_project` only adds reading the file. Paths are resolved against the directory of
eif.toml. Recipe files are not opened here: references into them (``"recipe.source"``) are checked
against the recipes when the build plan is made.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Literal, cast

from ..arch import ARCHES, Arch
from ..eif import (
    CUSTOM_METADATA_MAX_SIZE,
    BuildTime,
    dumps,
    key_kind,
    load_custom_metadata,
    parse_build_time,
    signs_deterministically,
)
from ..errors import ConfigError, FileAccessError, InputError, UsageError
from ..ramdisk import COMPRESSIONS
from ..store.remote import CacheSettings, parse_cache_table
from ..util.bounded import read_regular, safe_name
from ..util.tomlfile import MAX_TOML, parse_toml
from ..util.tomltable import TomlTables, join_key, type_name

if TYPE_CHECKING:
    from collections.abc import Mapping

    from ..ramdisk import Compression, Modes

CONFIG_NAME: Final = "eif.toml"
NAME_MAX_BYTES: Final = 128  # [eif] name becomes file names (<name>-<arch>.eif.pcr.json, temp files)
OUTSIDE_KEY: Final = "allow_paths_outside"  # [eif]: path inputs may leave the project (opt-in)
LOCK_NAME: Final = "eif.lock"  # the default [eif] lock_file
# Set by `doit check` for its rebuild: where a failing task writes "<error kind> <message>" (tasks.py)
FAILURE_FILE_ENV: Final = "EIFBUILD_FAILURE_FILE"
# Set by `doit check` for its rebuild: the original project's root, where an allowed outside path resolves
ORIGIN_ENV: Final = "EIFBUILD_CHECK_ORIGIN"
BUILTIN_SOURCES: Final = frozenset({"eifbuild-init"})
_REF_RE: Final = re.compile(r"^(?P<recipe>[A-Za-z0-9][A-Za-z0-9._+-]*)\.(?P<source>[A-Za-z0-9_-]+)$")
_ENV_KEY_RE: Final = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


# -- inputs ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SourceRef:
    """A named source of a recipe: ``"<recipe name>.<source name>"``."""

    recipe: str
    source: str

    def __str__(self) -> str:
        return f"{self.recipe}.{self.source}"


@dataclass(frozen=True)
class PathInput:
    """A file or directory of the project (resolved against eif.toml's directory)."""

    path: Path


@dataclass(frozen=True)
class Builtin:
    """A source shipped inside eifbuild (``eifbuild-init``: eifbuild's own init.c)."""

    name: str


@dataclass(frozen=True)
class TextInput:
    """A file whose content is given inline in eif.toml."""

    text: str


CompileItem = SourceRef | PathInput | Builtin


@dataclass(frozen=True)
class Compile:
    """C sources compiled by zig into one static binary for the EIF's arch."""

    sources: tuple[CompileItem, ...]
    cflags: tuple[str, ...] = ()


Input = SourceRef | PathInput | Compile | TextInput


# -- sections --------------------------------------------------------------------------------------
NO_NSM: Final = "none"


@dataclass(frozen=True)
class Bootstrap:
    """The bootstrap parts; None means "the recipes' [defaults] decide" (``nsm = "none"``: no nsm.ko)."""

    kernel: SourceRef | PathInput | None = None
    init: SourceRef | PathInput | Compile | None = None
    kernel_config: SourceRef | PathInput | None = None
    nsm: SourceRef | PathInput | Literal["none"] | None = None


@dataclass(frozen=True)
class AppFile:
    """An extra file placed into the app rootfs at ``dest`` (absolute path inside the enclave)."""

    dest: str
    input: Input
    mode: int | None = None


@dataclass(frozen=True)
class App:
    rootfs: Path | None = None
    oci: str | None = None
    files: tuple[AppFile, ...] = ()
    cmd: tuple[str, ...] | None = None
    env: tuple[tuple[str, str], ...] | None = None
    modes: Modes = "normalize"


@dataclass(frozen=True)
class Signing:
    certificate: Path
    key: str  # a key spec: a PEM file's absolute path, a KMS key ARN or a pkcs11: URI

    @property
    def deterministic(self) -> bool:
        """Whether signed EIFs are the same bytes every build (KMS and HSMs randomize ECDSA)."""
        return signs_deterministically(self.key)


@dataclass(frozen=True)
class Project:
    path: Path
    name: str
    version: str
    arches: tuple[Arch, ...]
    output: Path
    recipes: tuple[Path, ...]
    bootstrap: Bootstrap
    app: App
    build_time: BuildTime
    cmdline: Mapping[Arch, str] | SourceRef | None = None
    metadata: Mapping[str, Any] | None = None
    compression: Compression = "none"
    sign: Signing | None = None
    provenance: Signing | None = None  # [provenance]: the key that signs the provenance, else [sign]'s
    lock_file: Path = field(default=Path(LOCK_NAME))
    cache: CacheSettings = field(default_factory=CacheSettings)
    allow_paths_outside: bool = False  # [eif] allow_paths_outside: path inputs may leave the project

    @property
    def root(self) -> Path:
        return self.path.parent


# -- validation helpers ----------------------------------------------------------------------------
class _Ctx(TomlTables):
    """The checks of :class:`~eifbuild.util.tomltable.TomlTables`, plus paths relative to eif.toml."""

    def path_of(self, value: Any, key: str) -> Path:
        text = self.string(value, key)
        return (self.path.parent / text).resolve() if not Path(text).is_absolute() else Path(text)


def parse_ref(text: str, *, ctx: _Ctx, key: str) -> SourceRef:
    match = _REF_RE.match(text)
    if not match:
        msg = f"expected a recipe source reference '<recipe>.<source>' (e.g. 'demo.kernel'), got {text!r}"
        raise ctx.error(key, msg)
    return SourceRef(match["recipe"], match["source"])


# -- input grammar ---------------------------------------------------------------------------------
def _compile_items(value: Any, ctx: _Ctx, key: str) -> tuple[CompileItem, ...]:
    raw = value if isinstance(value, list) else [value]
    if not raw:
        raise ctx.error(key, "expected at least one C source")
    items: list[CompileItem] = []
    for i, item in enumerate(raw):
        item_key = f"{key}[{i}]" if isinstance(value, list) else key
        if isinstance(item, str) and item in BUILTIN_SOURCES:
            items.append(Builtin(item))
        elif isinstance(item, str):
            items.append(PathInput(ctx.path_of(item, item_key)))
        elif isinstance(item, dict):
            ctx.only_keys(item, {"source"}, item_key)
            items.append(
                parse_ref(ctx.string(item.get("source"), f"{item_key}.source"), ctx=ctx, key=item_key)
            )
        else:
            expected = "a path, 'eifbuild-init' or { source = '<recipe>.<source>' }"
            msg = f"expected {expected}, got {type_name(item)}"
            raise ctx.error(item_key, msg)
    return tuple(items)


def _input(
    value: Any, ctx: _Ctx, key: str, *, kinds: frozenset[str], extra: frozenset[str] = frozenset()
) -> Input:
    """One input: ``"recipe.source"``, or a table with one of ``source``/``path``/``compile``/``text``."""
    if isinstance(value, str) and "source" in kinds:
        return parse_ref(value, ctx=ctx, key=key)
    if not isinstance(value, dict):
        expected = " or ".join(f"{{ {k} = … }}" for k in sorted(kinds))
        raise ctx.error(key, f"expected '<recipe>.<source>' or {expected}, got {type_name(value)}")
    chosen = [k for k in ("source", "path", "compile", "text") if k in value]
    allowed = kinds | extra | ({"cflags"} if "compile" in value and "compile" in kinds else set())
    ctx.only_keys(value, allowed, key)
    if len(chosen) != 1:
        raise ctx.error(key, f"expected exactly one of: {', '.join(sorted(kinds))}")
    kind = chosen[0]
    sub = join_key(key, kind)
    if kind == "source":
        return parse_ref(ctx.string(value["source"], sub), ctx=ctx, key=sub)
    if kind == "path":
        return PathInput(ctx.path_of(value["path"], sub))
    if kind == "text":
        return TextInput(ctx.string(value["text"], sub, allow_empty=True))
    cflags = ctx.strings(value.get("cflags", []), join_key(key, "cflags"))
    return Compile(_compile_items(value["compile"], ctx, sub), cflags)


def _file_ref(value: Any, ctx: _Ctx, key: str) -> SourceRef | PathInput:
    return cast("SourceRef | PathInput", _input(value, ctx, key, kinds=frozenset({"source", "path"})))


def _program(value: Any, ctx: _Ctx, key: str) -> SourceRef | PathInput | Compile:
    kinds = frozenset({"source", "path", "compile"})
    return cast("SourceRef | PathInput | Compile", _input(value, ctx, key, kinds=kinds))


# -- sections --------------------------------------------------------------------------------------
_EIF_KEYS: Final = frozenset(
    {
        "name",
        "version",
        "arch",
        "output",
        "recipes",
        "cmdline",
        "build_time",
        "metadata",
        "compression",
        "lock_file",
        OUTSIDE_KEY,
    }
)
_BOOTSTRAP_KEYS: Final = frozenset({"kernel", "kernel_config", "init", "nsm"})
_APP_KEYS: Final = frozenset({"rootfs", "oci", "files", "cmd", "env", "modes"})
_SIGN_KEYS: Final = frozenset({"certificate", "key"})


def _arches(value: Any, ctx: _Ctx) -> tuple[Arch, ...]:
    raw = [value] if isinstance(value, str) else value
    if not isinstance(raw, list) or not raw:
        raise ctx.error("eif.arch", "expected 'x86_64', 'aarch64' or an array of them")
    arches: list[Arch] = []
    for i, item in enumerate(raw):
        arch = ctx.arch(ctx.string(item, f"eif.arch[{i}]"), f"eif.arch[{i}]")
        if arch in arches:
            raise ctx.error(f"eif.arch[{i}]", f"{arch} is listed twice")
        arches.append(arch)
    return tuple(a for a in ARCHES if a in arches)


def _cmdline(value: Any, ctx: _Ctx, arches: tuple[Arch, ...]) -> Mapping[Arch, str] | SourceRef | None:
    if value is None:
        return None
    if isinstance(value, str):
        return {a: _check_cmdline(value, ctx, "eif.cmdline") for a in arches}
    table = ctx.table(value, "eif.cmdline")
    if "source" in table:
        ctx.only_keys(table, {"source"}, "eif.cmdline")
        return parse_ref(ctx.string(table["source"], "eif.cmdline.source"), ctx=ctx, key="eif.cmdline.source")
    ctx.only_keys(table, set(ARCHES) | {"source"}, "eif.cmdline")
    missing = [a for a in arches if a not in table]
    if missing:
        raise ctx.error("eif.cmdline", f"no command line for {', '.join(missing)}")
    return {
        a: _check_cmdline(ctx.string(table[a], f"eif.cmdline.{a}"), ctx, f"eif.cmdline.{a}") for a in arches
    }


def _check_cmdline(text: str, ctx: _Ctx, key: str) -> str:
    if "\0" in text:
        raise ctx.error(key, "the kernel command line cannot contain a NUL byte")
    return text


def _build_time(value: Any, ctx: _Ctx) -> BuildTime:
    if value is None:
        return BuildTime.pinned()
    try:
        return parse_build_time(value, where="eif.build_time")
    except UsageError as exc:
        raise ctx.error("eif.build_time", exc.reason) from None


def _metadata(value: Any, ctx: _Ctx) -> Mapping[str, Any] | None:
    """CustomMetadata: a JSON file (a regular file of at most 4096 bytes, as eif_build allows) or an
    inline table whose JSON is at most as long."""
    if value is None:
        return None
    if isinstance(value, str):
        path = ctx.path_of(value, "eif.metadata")
        if not path.exists():
            raise ctx.error("eif.metadata", f"metadata file {path} does not exist")
        try:
            data = load_custom_metadata(path)
        except (InputError, FileAccessError) as exc:
            raise ctx.error("eif.metadata", f"{path}: {exc.reason}") from None
        if not isinstance(data, dict):
            raise ctx.error("eif.metadata", f"{path} must hold a JSON object")
        return data
    table = ctx.table(value, "eif.metadata")
    try:
        size = len(dumps(table).encode("utf-8"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ctx.error("eif.metadata", f"cannot be written as JSON: {exc}") from None
    if size > CUSTOM_METADATA_MAX_SIZE:
        msg = f"is {size} bytes as JSON: at most {CUSTOM_METADATA_MAX_SIZE} are allowed (as eif_build)"
        raise ctx.error("eif.metadata", msg)
    return table


def _name(value: Any, ctx: _Ctx) -> str:
    """[eif] name: it names the output files, so it must be one safe, short file name."""
    name = ctx.string(value, "eif.name")
    problem = safe_name(name, max_bytes=NAME_MAX_BYTES)
    if problem is not None:
        raise ctx.error("eif.name", f"{problem} (it names the output files)")
    return name


def _output(value: Any, ctx: _Ctx) -> Path:
    path = ctx.path_of(value, "eif.output")
    if path.exists() and not path.is_dir():
        raise ctx.error("eif.output", f"{path} exists and is not a directory: expected the output directory")
    return path


def _bootstrap(value: Any, ctx: _Ctx) -> Bootstrap:
    table = ctx.table(value, "bootstrap")
    ctx.only_keys(table, _BOOTSTRAP_KEYS, "bootstrap")
    kernel, config, init, nsm = (table.get(k) for k in ("kernel", "kernel_config", "init", "nsm"))
    return Bootstrap(
        kernel=None if kernel is None else _file_ref(kernel, ctx, "bootstrap.kernel"),
        init=None if init is None else _program(init, ctx, "bootstrap.init"),
        kernel_config=None if config is None else _file_ref(config, ctx, "bootstrap.kernel_config"),
        nsm=None if nsm is None else NO_NSM if nsm == NO_NSM else _file_ref(nsm, ctx, "bootstrap.nsm"),
    )


def _mode(value: Any, ctx: _Ctx, key: str) -> int:
    if isinstance(value, str) and re.fullmatch(r"0?[0-7]{3,4}", value):
        return int(value, 8)
    raise ctx.error(key, f"expected an octal mode string like '0755', got {value!r}")


def _app_files(value: Any, ctx: _Ctx) -> tuple[AppFile, ...]:
    table = ctx.table(value, "app.files")
    files = []
    for dest, spec in table.items():
        key = f"app.files.{dest!r}" if "." in dest else f"app.files.{dest}"
        if (
            not dest.startswith("/")
            or dest.endswith("/")
            or any(p in {"", ".", ".."} for p in dest[1:].split("/"))
        ):
            raise ctx.error(key, "expected an absolute path inside the enclave like '/bin/hello'")
        kinds = frozenset({"source", "path", "compile", "text"})
        parsed = _input(spec, ctx, key, kinds=kinds, extra=frozenset({"mode"}))
        mode = _mode(spec["mode"], ctx, f"{key}.mode") if isinstance(spec, dict) and "mode" in spec else None
        files.append(AppFile(dest, parsed, mode))
    return tuple(sorted(files, key=lambda f: f.dest.encode()))


def _check_image_ref(ref: str, ctx: _Ctx) -> None:
    """``[app] oci``'s syntax (or its path), checked when eif.toml loads, not when it is fetched."""
    from ..oci import parse_image_ref  # noqa: PLC0415 - image code only for OCI projects

    try:
        parse_image_ref(ref, ctx.path.parent)
    except (InputError, FileAccessError) as exc:
        raise ctx.error("app.oci", exc.reason) from None


def _env(value: Any, ctx: _Ctx) -> tuple[tuple[str, str], ...]:
    table = ctx.table(value, "app.env")
    env = []
    for name, val in sorted(table.items()):
        if not _ENV_KEY_RE.match(name):
            raise ctx.error(f"app.env.{name}", "expected a variable name of letters, digits and '_'")
        env.append((name, ctx.string(val, f"app.env.{name}", allow_empty=True)))
    return tuple(env)


def _app(value: Any, ctx: _Ctx) -> App:
    table = ctx.table(value, "app")
    ctx.only_keys(table, _APP_KEYS, "app")
    rootfs = ctx.path_of(table["rootfs"], "app.rootfs") if "rootfs" in table else None
    oci = ctx.string(table["oci"], "app.oci") if "oci" in table else None
    if rootfs is not None and oci is not None:
        raise ctx.error("app", "give either 'rootfs' (a directory) or 'oci' (an image), not both")
    if oci is not None:
        _check_image_ref(oci, ctx)
    files = _app_files(table.get("files", {}), ctx)
    if rootfs is None and oci is None and not files:
        raise ctx.error("app", "expected 'rootfs', 'oci' or 'files': the app ramdisk would be empty")
    cmd = ctx.strings(table["cmd"], "app.cmd") if "cmd" in table else None
    if cmd is not None and not cmd:
        raise ctx.error("app.cmd", "expected at least the program to run")
    if cmd is None and oci is None:
        raise ctx.error("app.cmd", "missing: the command to run (only an OCI image can provide a default)")
    modes = table.get("modes", "normalize")
    if modes not in ("normalize", "preserve"):
        raise ctx.error("app.modes", f"expected 'normalize' or 'preserve', got {modes!r}")
    env = _env(table["env"], ctx) if "env" in table else None
    return App(rootfs=rootfs, oci=oci, files=files, cmd=cmd, env=env, modes=modes)


def _sign(value: Any, ctx: _Ctx, section: str = "sign") -> Signing:
    table = ctx.table(value, section)
    ctx.only_keys(table, _SIGN_KEYS, section)
    for required in ("certificate", "key"):
        if required not in table:
            raise ctx.error(f"{section}.{required}", "missing: signing needs a certificate and a private key")
    key = ctx.string(table["key"], f"{section}.key")
    if key_kind(key) == "pem":
        key = str(ctx.path_of(key, f"{section}.key"))
    return Signing(ctx.path_of(table["certificate"], f"{section}.certificate"), key)


def parse_project(text: str, path: Path) -> Project:
    """Validate the TOML text of an eif.toml located at ``path``."""
    ctx = _Ctx(path)
    doc = parse_toml(text, path)
    ctx.only_keys(doc, {"eif", "bootstrap", "app", "sign", "provenance", "cache"}, "")
    for section in ("eif", "app"):
        if section not in doc:
            raise ctx.error(section, f"missing section [{section}]")
    eif = ctx.table(doc["eif"], "eif")
    ctx.only_keys(eif, _EIF_KEYS, "eif")
    if "name" not in eif:
        raise ctx.error("eif.name", "missing: the image name")
    arches = _arches(eif.get("arch", list(ARCHES)), ctx)
    build_time = _build_time(eif.get("build_time"), ctx)
    given = eif.get("compression", "none")
    compression = next((c for c in COMPRESSIONS if c == given), None)  # the ramdisk writer's list
    if compression is None:
        expected = " or ".join(repr(c) for c in COMPRESSIONS)
        raise ctx.error("eif.compression", f"expected {expected}, got {given!r}")
    recipes = eif.get("recipes", [])
    return Project(
        path=path,
        name=_name(eif["name"], ctx),
        version=ctx.string(eif.get("version", "0.0.0"), "eif.version"),
        arches=arches,
        output=_output(eif.get("output", "build"), ctx),
        recipes=tuple(
            ctx.path_of(r, f"eif.recipes[{i}]") for i, r in enumerate(ctx.strings(recipes, "eif.recipes"))
        ),
        bootstrap=_bootstrap(doc.get("bootstrap", {}), ctx),
        app=_app(doc["app"], ctx),
        build_time=build_time,
        cmdline=_cmdline(eif.get("cmdline"), ctx, arches),
        metadata=_metadata(eif.get("metadata"), ctx),
        compression=compression,
        sign=_sign(doc["sign"], ctx) if "sign" in doc else None,
        provenance=_sign(doc["provenance"], ctx, "provenance") if "provenance" in doc else None,
        lock_file=ctx.path_of(eif.get("lock_file", LOCK_NAME), "eif.lock_file"),
        cache=parse_cache_table(doc["cache"], ctx, base=path.parent) if "cache" in doc else CacheSettings(),
        allow_paths_outside=ctx.boolean(eif.get(OUTSIDE_KEY, False), f"eif.{OUTSIDE_KEY}"),
    )


def find_project(start: str | os.PathLike[str] = ".") -> Path | None:
    """The nearest directory at or above ``start`` holding an eif.toml, or None outside any project."""
    here = Path(start).absolute()
    return next((c for c in (here, *here.parents) if (c / CONFIG_NAME).is_file()), None)


def find_project_dir(start: str | os.PathLike[str] = ".") -> Path:
    """The nearest directory at or above ``start`` holding an eif.toml; ``start`` itself if none."""
    return find_project(start) or Path(start).absolute()


def load_project(path: str | Path) -> Project:
    """Read and validate an eif.toml (a directory means its eif.toml)."""
    target = Path(path)
    if target.is_dir():
        target = target / CONFIG_NAME
    target = target.absolute()
    if not os.path.lexists(target):
        raise FileAccessError("no such file: expected an eif.toml build description", path=target)
    try:
        text = read_regular(target, limit=MAX_TOML, what="eif.toml").decode("utf-8")
    except InputError as exc:
        raise ConfigError(exc.reason, path=target) from None
    except UnicodeDecodeError:
        raise ConfigError("not UTF-8 text", path=target) from None
    return parse_project(text, target)
