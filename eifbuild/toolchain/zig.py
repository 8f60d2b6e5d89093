"""Cross-compile C into static musl executables with the zig of the ``ziglang`` wheel, through the store.

One compile is one store step: its key covers the sources (names and sha256), the flags, the target
and the zig version, so a second compile of the same inputs starts no process at all. The command
line is fixed (see :func:`zig_command`) and hermetic:

- zig comes from the installed ``ziglang`` package, never from PATH;
- it runs in a fresh directory holding copies of the sources under their base names, with an
  environment of only ``HOME``, ``SOURCE_DATE_EPOCH=0``, ``TZ=UTC``, ``LC_ALL=C`` and zig's two
  cache variables, and prefix maps for that directory and for zig's own files;
- ``-mcpu=baseline -static -O2 -s``: no host CPU features, no interpreter, no debug info (zig's
  musl objects carry DWARF with absolute cache paths, so unstripped output is not reproducible).

zig's caches live in ``<store>/zig-cache/``, shared by every compile of that store: musl libc and
compiler-rt are built once per store and target (about a minute), later compiles take ~0.1 s.
zig locks its own cache, so concurrent compiles for one target are safe.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Final

from .. import log
from ..arch import info
from ..errors import FileAccessError, HashMismatch, StoreError, ToolError, UsageError
from ..store import Step, Store, StoreEntry, TypedParams
from ..util.fsutil import CHUNK, atomic_write, hash_file
from ._elf import check_static_executable, read_elf

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

    from ..arch import Arch

KIND: Final = "zig-cc"
# Bump when the command line, the environment or the source layout of a compile changes.
KIND_VERSION: Final = 1
PINNED_ZIG: Final = "0.17.1"  # keep equal to the ziglang pin in pyproject.toml
BASE_FLAGS: Final = ("-mcpu=baseline", "-static", "-O2", "-s")
ZIG_CACHE: Final = "zig-cache"
ZIG_CACHE_ENV: Final = "EIFBUILD_ZIG_CACHE"
SOURCE_DATE_EPOCH: Final = "0"
HEADER_SUFFIXES: Final = (".h",)

_NATIVE_FLAGS: Final = ("-mcpu=native", "-march=native", "-mtune=native")
_OWN_FLAGS: Final = ("-target", "--target", "-o", "-c", "-S", "-E")
# Flags that pull files from the host: their contents would not be part of the key.
_PATH_FLAGS: Final = (
    "-I",
    "-isystem",
    "-iquote",
    "-idirafter",
    "-include",
    "-imacros",
    "-L",
    "--sysroot",
    "-B",
    "@",
)


@dataclass(frozen=True)
class CompileSource:
    """A source file as the compile sees it: its base name, where it is now, and its sha256."""

    name: str
    path: Path
    sha256: str

    @property
    def is_header(self) -> bool:
        return self.name.endswith(HEADER_SUFFIXES)


@dataclass(frozen=True)
class ZigCcParams(TypedParams):
    """A ``zig-cc`` step (its inputs are the sources' digests as ``src/<name>``, its tool the zig
    version): compile ``sources`` (base names, ``.h`` files only copied beside them) for ``arch``
    with ``cflags`` into the one output ``output``."""

    KIND: ClassVar[str] = KIND
    VERSION: ClassVar[int] = KIND_VERSION

    arch: Arch
    cflags: tuple[str, ...]
    sources: tuple[str, ...]
    output: str

    @property
    def target(self) -> str:
        return info(self.arch).zig_target

    def to_json(self) -> dict[str, str | list[str]]:
        return {
            "target": self.target,
            "cflags": list(self.cflags),
            "sources": list(self.sources),
            "output": self.output,
        }

    @property
    def compiled(self) -> list[str]:
        """The sources zig compiles (not the headers)."""
        return [name for name in self.sources if not name.endswith(HEADER_SUFFIXES)]


@dataclass(frozen=True)
class Binary:
    """The compiled executable of a ``zig-cc`` store entry."""

    path: Path
    sha256: str
    size: int
    key: str

    @classmethod
    def from_entry(cls, entry: StoreEntry) -> Binary:
        if entry.kind != KIND:
            msg = f"kind {entry.kind!r}, expected a {KIND} binary"
            raise StoreError(msg, key=entry.key)
        name = str(entry.record["step"]["params"]["output"])
        return cls(entry.file(name), entry.digest(name), int(entry.outputs[name]["size"]), entry.key)


# -- the zig of the ziglang package -------------------------------------------------------------
def zig_package_dir() -> Path:
    """Directory of the installed ``ziglang`` package (found without importing it)."""
    spec = importlib.util.find_spec("ziglang")
    if spec is None or not spec.submodule_search_locations:
        msg = (
            f"zig not found: the Python package ziglang is not installed (pip install ziglang=={PINNED_ZIG})"
        )
        raise ToolError(msg)
    return Path(next(iter(spec.submodule_search_locations)))


def zig_executable() -> Path:
    zig = zig_package_dir() / "zig"
    if not zig.is_file():
        msg = f"zig not found: {zig} is missing; reinstall the ziglang package"
        raise ToolError(msg)
    return zig


def zig_identity() -> str:
    """The zig version, part of every compile key: the ``ziglang`` distribution's version (no process)."""
    try:
        version = importlib.metadata.version("ziglang")
    except importlib.metadata.PackageNotFoundError:
        msg = (
            f"zig not found: the Python package ziglang is not installed (pip install ziglang=={PINNED_ZIG})"
        )
        raise ToolError(msg) from None
    _warn_unpinned(version)
    return version


@functools.cache
def _warn_unpinned(version: str) -> None:
    if version != PINNED_ZIG:
        log.warn(
            f"ziglang {version} is installed, eifbuild pins {PINNED_ZIG}: binaries (and PCRs) will differ"
        )


def zig_cache_dir(store: Store) -> Path:
    return store.root / ZIG_CACHE


def zig_global_cache_dir() -> Path:
    """Where zig keeps the libc (musl) and compiler-rt it builds once per target: one per user and
    zig version (platformdirs' cache dir: ``~/.cache/eifbuild/zig/<version>`` on Linux), so a machine
    builds musl once, not once per project store.

    ``$EIFBUILD_ZIG_CACHE`` names another (the test suite uses its own). zig's cache is
    content-addressed and locked, so sharing it between stores and processes is safe, and the
    outputs do not depend on it (a cold cache gives the same bytes).
    """
    override = os.environ.get(ZIG_CACHE_ENV)
    if override:
        return Path(override).absolute()
    import platformdirs  # noqa: PLC0415

    return platformdirs.user_cache_path("eifbuild") / "zig" / zig_identity()


def zig_environment(cache: Path) -> dict[str, str]:
    """The whole environment zig runs in: nothing from the caller's."""
    return {
        "HOME": str(cache / "home"),
        "LC_ALL": "C",
        "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH,
        "TZ": "UTC",
        "ZIG_GLOBAL_CACHE_DIR": str(zig_global_cache_dir()),
        "ZIG_LOCAL_CACHE_DIR": str(cache / "local"),
    }


def zig_command(
    zig: Path, work: Path, *, arch: Arch, cflags: Sequence[str], sources: Sequence[str], output: str
) -> list[str]:
    """The compile command; ``work`` is the directory it runs in, holding ``sources``."""
    return [
        str(zig),
        "cc",
        "-target",
        info(arch).zig_target,
        *BASE_FLAGS,
        f"-ffile-prefix-map={work}=.",
        f"-ffile-prefix-map={zig.parent}=zig",
        *cflags,
        *sources,
        "-o",
        output,
    ]


# -- validation --------------------------------------------------------------------------------
def _check_name(name: str, what: str) -> None:
    if not name or name in {".", ".."} or "/" in name or name.startswith("-"):
        msg = f"{what} {name!r}: expected a plain file name (no '/', not starting with '-')"
        raise UsageError(msg)


def check_cflags(cflags: Sequence[str]) -> None:
    """Reject flags that make the output depend on the host or clash with the fixed command line."""
    for flag in cflags:
        if flag in _NATIVE_FLAGS:
            msg = f"{flag} depends on the build machine's CPU; the output would not be reproducible"
        elif flag in _OWN_FLAGS or flag.startswith("--target="):
            msg = f"{flag} is set by eifbuild (target from --arch, output from -o); remove it"
        elif flag.startswith(_PATH_FLAGS):
            msg = f"{flag} reads files the compile key does not cover; list headers among the sources instead"
        else:
            continue
        raise UsageError(msg, key="cflags")


def hash_sources(paths: Sequence[Path]) -> list[CompileSource]:
    if not paths:
        msg = "no source files given"
        raise UsageError(msg)
    sources: list[CompileSource] = []
    seen: dict[str, Path] = {}
    for path in paths:
        name = path.name
        _check_name(name, "source file name")
        if name in seen:
            msg = f"two sources named {name!r} ({seen[name]} and {path}); sources are compiled side by side"
            raise UsageError(msg)
        seen[name] = path
        if not path.is_file():
            msg = "source file not found"
            raise FileAccessError(msg, path=path)
        sources.append(CompileSource(name, path, hash_file(path)))
    if all(s.is_header for s in sources):
        msg = "only headers given: name at least one .c source"
        raise UsageError(msg)
    return sources


# -- the step ----------------------------------------------------------------------------------
def _step(
    sources: Sequence[CompileSource], arch: Arch, cflags: Sequence[str], output_name: str
) -> Step[ZigCcParams]:
    params = ZigCcParams(arch, tuple(cflags), tuple(s.name for s in sources), output_name)
    return Step(params, inputs={f"src/{s.name}": s.sha256 for s in sources}, tool={"zig": zig_identity()})


def _checked_step(
    sources: Sequence[Path], arch: Arch, cflags: Sequence[str], output_name: str
) -> tuple[list[CompileSource], Step[ZigCcParams]]:
    """The hashed sources and the step of a compile, once its name and flags are checked."""
    _check_name(output_name, "output name")
    check_cflags(cflags)
    hashed = hash_sources(sources)
    return hashed, _step(hashed, arch, cflags, output_name)


def compile_step(
    sources: Sequence[Path], *, arch: Arch, cflags: Sequence[str] = (), output_name: str = "a.out"
) -> Step[ZigCcParams]:
    """The store step of a compile (hashes the sources, runs nothing): ``.key`` is its cache key."""
    return _checked_step(sources, arch, cflags, output_name)[1]


def compile_c(
    store: Store,
    sources: Sequence[Path],
    *,
    arch: Arch,
    cflags: Sequence[str] = (),
    output_name: str = "a.out",
) -> StoreEntry:
    """Compile and link ``sources`` (``.h`` files are only copied beside them) into a static binary.

    Returns the store entry holding the one output ``output_name``; a cache hit runs nothing.
    A compile error or a binary that is not a static ``arch`` executable raises :class:`ToolError`
    and leaves nothing in the store.
    """
    hashed, step = _checked_step(sources, arch, cflags, output_name)
    return store.realize(step, functools.partial(_compile, store, step.key, hashed))


def compile_c_binary(
    store: Store,
    sources: Sequence[Path],
    *,
    arch: Arch,
    cflags: Sequence[str] = (),
    output_name: str = "a.out",
) -> Binary:
    """:func:`compile_c`, returning the binary's path (read-only, in the store) and sha256."""
    return Binary.from_entry(compile_c(store, sources, arch=arch, cflags=cflags, output_name=output_name))


# -- running zig -------------------------------------------------------------------------------
def _copy_sources(sources: Sequence[CompileSource], work: Path) -> None:
    """Copy to fixed names, re-checking the digests the key was made from."""
    for src in sources:
        dest = work / src.name
        shutil.copyfile(src.path, dest)
        actual = hash_file(dest)
        if actual != src.sha256:
            what = f"{src.path} (changed while compiling)"
            raise HashMismatch(what, expected=src.sha256, actual=actual)


def _first_error(stderr: str, returncode: int) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    for line in lines:
        if "error:" in line:
            return line
    return lines[0] if lines else f"exit status {returncode}, no message"


def _run_zig(argv: list[str], work: Path, env: Mapping[str, str], what: str) -> str:
    try:
        proc = subprocess.run(
            argv,
            cwd=work,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            encoding="utf-8",
            errors="replace",
            check=False,
        )
    except OSError as exc:
        msg = f"cannot run zig ({argv[0]}): {exc.strerror or exc}"
        raise ToolError(msg, cmd=argv) from exc
    output = proc.stderr + proc.stdout
    if proc.returncode != 0:
        log.info(f"zig cc {what} output:\n{output.rstrip()}")
        msg = f"zig cc failed for {what}: {_first_error(output, proc.returncode)}"
        raise ToolError(msg, cmd=argv, returncode=proc.returncode, output=output)
    return output


def _compile(
    store: Store, key: str, sources: Sequence[CompileSource], params: ZigCcParams, out: Path
) -> None:
    """The action of a ``zig-cc`` step: ``sources`` are its inputs (re-checked against their digests)."""
    zig = zig_executable()
    arch, target, dest = params.arch, params.target, out / params.output
    cache = zig_cache_dir(store)
    (cache / "home").mkdir(parents=True, exist_ok=True)
    # Beside the musl zig builds: a global cache shared with other stores (doit check) has it already.
    ready = zig_global_cache_dir() / f"eifbuild-ready-{target}"
    what = f"{dest.name} ({arch})"
    if not ready.exists():
        log.step(f"zig: first compile for {target} with this zig cache builds musl libc (about a minute)")
    log.step(f"compiling {what} with zig {zig_identity()}")
    # Named after the key, inside store/tmp, so 'store gc' leaves it alone while we hold the key's lock.
    with tempfile.TemporaryDirectory(prefix=f"{key[:16]}.cc.", dir=store.tmp_dir) as tmp:
        work = Path(tmp)
        _copy_sources(sources, work)
        argv = zig_command(
            zig, work, arch=arch, cflags=params.cflags, sources=params.compiled, output=dest.name
        )
        output = _run_zig(argv, work, zig_environment(cache), what)
        built = work / dest.name
        if not built.is_file():
            msg = f"zig cc reported success for {what} but wrote no {dest.name}"
            raise ToolError(msg, cmd=argv, returncode=0, output=output)
        check_static_executable(read_elf(built, what), arch, what)
        built.chmod(0o755)
        built.replace(dest)
    ready.parent.mkdir(parents=True, exist_ok=True)
    ready.touch()
    if output.strip():
        log.warn(f"zig cc {what}:\n{output.rstrip()}")


def compile_to(
    store: Store, sources: Sequence[Path], output: Path, *, arch: Arch, cflags: Sequence[str] = ()
) -> Binary:
    """Compile through the store (output name = ``output``'s name) and copy the binary to ``output``."""
    binary = compile_c_binary(store, sources, arch=arch, cflags=cflags, output_name=output.name)
    with atomic_write(output, mode=0o755) as fh, open(binary.path, "rb") as src:
        shutil.copyfileobj(src, fh, CHUNK)
    return binary
