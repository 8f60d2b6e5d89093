"""The ``kernel`` build step: a Linux kernel built reproducibly from a pinned source tarball.

One build is one store step. Its key covers the source tarball's sha256, the base config (a
``make`` target such as ``tinyconfig``, or the sha256 of a whole ``.config``), the fragment's and
patches' sha256, the arch, the fixed build identity (``KBUILD_BUILD_*``) and the toolchain's
identity (``clang --version``, ``ld.lld --version``). The build:

1. unpacks the tarball (top directory stripped) and applies the patches with ``patch -p1``;
2. makes the base config (``make tinyconfig``) or copies the given ``.config``, merges the fragment
   over it and runs ``make olddefconfig``;
3. checks that every fragment option ended up as asked (an option whose dependencies are missing
   is silently dropped by Kconfig: that is an error here, naming the options), then hands the
   final config to the caller's check (recipe builds: the kernel lint), which may stop the build;
4. runs ``make LLVM=1 -j<cpus> <image> [modules]`` with ``KBUILD_BUILD_TIMESTAMP``, ``_USER``,
   ``_HOST`` and ``_VERSION`` fixed and nothing else from the caller's environment but ``PATH``;
5. outputs ``bzImage``/``Image``, ``<image>.config`` and any requested modules. On aarch64 the
   Image header's text_offset is set to 0x200000, as AWS's kernel build does: the Nitro loader
   cannot place an Image whose text_offset is 0.

The object directory is a direct child of the source directory, so Kbuild refers to sources by
relative paths (``srctree = ..``) and the output does not depend on where the build ran.

Prerequisites (Debian): ``apt-get install clang lld llvm make flex bison bc libelf-dev``.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, Final

from .. import log
from ..arch import info
from ..errors import ConfigError, FileAccessError, InputError, ToolError
from ..store import Step, Store, StoreEntry, TypedParams
from ..util.fsutil import hash_file

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from ..arch import Arch

KIND: Final = "kernel"
# Bump when the build procedure changes in a way that can change the outputs.
KIND_VERSION: Final = 1
BUILD_IDENTITY: Final = {
    "KBUILD_BUILD_TIMESTAMP": "1970-01-01 00:00:00 UTC",
    "KBUILD_BUILD_USER": "eifbuild",
    "KBUILD_BUILD_HOST": "eifbuild",
    "KBUILD_BUILD_VERSION": "1",
}
BASE_TARGETS: Final = ("tinyconfig", "allnoconfig", "defconfig")
PREREQUISITES: Final = (
    "make",
    "clang",
    "ld.lld",
    "llvm-ar",
    "llvm-nm",
    "llvm-objcopy",
    "flex",
    "bison",
    "bc",
    "tar",
)
INSTALL_HINT: Final = "apt-get install clang lld llvm make flex bison bc libelf-dev"
ARM64_TEXT_OFFSET: Final = 0x200000
ARM64_MAGIC: Final = b"ARM\x64"
OUTPUT_TAIL_LINES: Final = 40

_LINUX_ARCH_DIR: Final = {"x86_64": "x86", "arm64": "arm64"}
_SET: Final = re.compile(r"(CONFIG_[A-Za-z0-9_]+)=(.*)")
_UNSET: Final = re.compile(r"# (CONFIG_[A-Za-z0-9_]+) is not set")
_MODULE: Final = re.compile(r"[A-Za-z0-9_./-]+\.ko")
_ERROR: Final = re.compile(r"\berror:", re.IGNORECASE)


# -- config files (pure) ----------------------------------------------------------------------------
def parse_config(text: str, *, path: str | Path | None = None, strict: bool = False) -> dict[str, str]:
    """Options of a kernel ``.config`` or fragment: name → value (``n`` for ``# … is not set``).

    With ``strict`` (fragments), any line that is neither an option, a blank nor a comment is a
    :class:`InputError`, and so is an option given twice.
    """
    options: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if match := _SET.fullmatch(line):
            name, value = match.group(1), match.group(2)
        elif match := _UNSET.fullmatch(line):
            name, value = match.group(1), "n"
        elif not strict or not line or line.startswith("#"):
            continue
        else:
            msg = f"expected CONFIG_NAME=value or '# CONFIG_NAME is not set', got {raw!r}"
            raise InputError(msg, path=path, line=number)
        if strict and name in options:
            msg = f"{name} is set twice"
            raise InputError(msg, path=path, line=number)
        options[name] = value
    return options


def config_line(name: str, value: str) -> str:
    return f"# {name} is not set" if value == "n" else f"{name}={value}"


def merge_fragment(config: str, fragment: Mapping[str, str]) -> str:
    """``config`` with the fragment's options replacing its lines for them, appended at the end."""
    kept = []
    for line in config.splitlines():
        stripped = line.strip()
        match = _SET.fullmatch(stripped) or _UNSET.fullmatch(stripped)
        if match is None or match.group(1) not in fragment:
            kept.append(line)
    kept.extend(config_line(name, value) for name, value in fragment.items())
    return "\n".join(kept) + "\n"


def fragment_mismatches(config: Mapping[str, str], fragment: Mapping[str, str]) -> list[str]:
    """Fragment options the final config does not have as asked, as ``NAME=wanted (got actual)``."""
    wrong = []
    for name, wanted in fragment.items():
        actual = config.get(name, "n")
        if actual != wanted:
            shown = "not set" if actual == "n" else actual
            wrong.append(f"{name}={wanted} (got {shown})")
    return wrong


def set_text_offset(image: bytearray, offset: int = ARM64_TEXT_OFFSET) -> None:
    """Write ``offset`` into an arm64 Image header's text_offset (bytes 8..16, little endian)."""
    if len(image) < 64 or image[56:60] != ARM64_MAGIC:
        msg = "not an arm64 Image: no 'ARM\\x64' magic at offset 56"
        raise ToolError(msg)
    image[8:16] = struct.pack("<Q", offset)


# -- what a build depends on ----------------------------------------------------------------------
@dataclass(frozen=True)
class KernelSpec:
    """Everything a kernel build depends on, besides the toolchain.

    ``base`` is a ``make`` config target (``tinyconfig``…); ``base_config``, when given, is a whole
    ``.config`` to start from instead. ``options`` are merged after the fragment (and checked
    like it). ``modules`` are paths of modules in the build tree to build
    (``make modules``) and output, e.g. ``drivers/misc/nsm.ko``.
    """

    arch: Arch
    source: Path
    source_sha256: str
    fragment: Path | None = None
    options: Mapping[str, str] = field(default_factory=dict)  # merged after the fragment
    base: str = "tinyconfig"
    base_config: Path | None = None
    patches: tuple[Path, ...] = ()
    modules: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.base_config is None and self.base not in BASE_TARGETS:
            targets = ", ".join(BASE_TARGETS)
            msg = f"unknown base config {self.base!r}: expected one of {targets} or a .config file"
            raise ConfigError(msg, key="base")
        for module in self.modules:
            if not _MODULE.fullmatch(module) or ".." in module.split("/") or module.startswith("/"):
                msg = f"{module!r} is not a module path in the build tree (like drivers/misc/nsm.ko)"
                raise ConfigError(msg, key="modules")

    @property
    def image_name(self) -> str:
        return info(self.arch).kernel_image

    @property
    def config_name(self) -> str:
        return f"{self.image_name}.config"


@dataclass(frozen=True)
class KernelParams(TypedParams):
    """A ``kernel`` step (its inputs: the digests of the source tarball, fragment, base config and
    patches; its tool: the toolchain identity): build for ``arch`` from the config target ``base``
    (``file``: the base config input), with ``options`` merged after the fragment, and output the
    image, its config and ``modules``."""

    KIND: ClassVar[str] = KIND
    VERSION: ClassVar[int] = KIND_VERSION

    arch: Arch
    base: str
    modules: tuple[str, ...]
    options: tuple[tuple[str, str], ...]

    @property
    def image(self) -> str:
        return info(self.arch).kernel_image

    @property
    def config_name(self) -> str:
        return f"{self.image}.config"

    def to_json(self) -> dict[str, object]:
        return {
            "arch": self.arch,
            "base": self.base,
            "image": self.image,
            "modules": list(self.modules),
            "options": dict(self.options),
            "kbuild": dict(BUILD_IDENTITY),
            "llvm": True,
            "text_offset": ARM64_TEXT_OFFSET if self.arch == "aarch64" else None,
        }


@dataclass(frozen=True)
class KernelFiles:
    """Where a kernel step's input files are (their digests are the step's inputs)."""

    source: Path
    fragment: Path | None
    base_config: Path | None
    patches: tuple[Path, ...]

    @classmethod
    def of(cls, spec: KernelSpec) -> KernelFiles:
        return cls(spec.source, spec.fragment, spec.base_config, spec.patches)


@dataclass(frozen=True)
class KernelBuild:
    """A built kernel in the store: the image, its final ``.config`` and any modules."""

    key: str
    arch: Arch
    image: Path
    image_sha256: str
    config: Path
    modules: Mapping[str, Path] = field(default_factory=dict)

    @classmethod
    def from_entry(cls, entry: StoreEntry, spec: KernelSpec) -> KernelBuild:
        return cls(
            key=entry.key,
            arch=spec.arch,
            image=entry.file(spec.image_name),
            image_sha256=entry.digest(spec.image_name),
            config=entry.file(spec.config_name),
            modules={Path(m).name: entry.file(Path(m).name) for m in spec.modules},
        )


def _tool_version(tool: str) -> str:
    exe = shutil.which(tool)
    if exe is None:
        msg = f"{tool} not found: building a kernel needs {INSTALL_HINT}"
        raise ToolError(msg, cmd=[tool])
    try:
        proc = subprocess.run([exe, "--version"], capture_output=True, text=True, check=False)
    except OSError as exc:
        msg = f"cannot run {tool} --version: {exc.strerror or exc}"
        raise ToolError(msg, cmd=[exe, "--version"]) from None
    first = (proc.stdout.strip().splitlines() or [""])[0].strip()
    if proc.returncode != 0 or not first:
        msg = f"{tool} --version failed (exit {proc.returncode})"
        raise ToolError(msg, cmd=[exe, "--version"], returncode=proc.returncode, output=proc.stderr)
    return first


def check_prerequisites() -> None:
    """Every tool a kernel build runs is on PATH, else a :class:`ToolError` with the install hint."""
    missing = [tool for tool in PREREQUISITES if shutil.which(tool) is None]
    if missing:
        msg = f"building a kernel needs {', '.join(missing)}: {INSTALL_HINT}"
        raise ToolError(msg, cmd=missing)


def toolchain_identity() -> dict[str, str]:
    """The compiler and linker versions: part of the step key (their output depends on them)."""
    return {"clang": _tool_version("clang"), "ld.lld": _tool_version("ld.lld")}


def kernel_step(spec: KernelSpec, tool: Mapping[str, str] | None = None) -> Step[KernelParams]:
    """The store step of a kernel build (hashes the small inputs, runs nothing but ``--version``)."""
    inputs = {"source": spec.source_sha256}
    if spec.fragment is not None:
        inputs["fragment"] = _hash_input(spec.fragment, "kernel config fragment")
    if spec.base_config is not None:
        inputs["base-config"] = _hash_input(spec.base_config, "kernel base config")
    for i, patch in enumerate(spec.patches):
        inputs[f"patch/{i:03d}"] = _hash_input(patch, "kernel patch")
    params = KernelParams(
        arch=spec.arch,
        base="file" if spec.base_config is not None else spec.base,
        modules=spec.modules,
        options=tuple(spec.options.items()),
    )
    return Step(params, inputs, dict(tool) if tool is not None else toolchain_identity())


def _hash_input(path: Path, what: str) -> str:
    if not path.is_file():
        msg = f"{what} not found"
        raise FileAccessError(msg, path=path)
    return hash_file(path)


# -- the build ------------------------------------------------------------------------------------
def build_kernel(
    store: Store,
    spec: KernelSpec,
    *,
    jobs: int | None = None,
    tool: Mapping[str, str] | None = None,
    check_config: Callable[[Mapping[str, str]], object] | None = None,
) -> KernelBuild:
    """Build (or find in the store) the kernel of ``spec``.

    A failing ``make`` raises :class:`ToolError` with the tail of its output; a fragment option
    that did not survive ``olddefconfig`` raises :class:`ConfigError`. Nothing enters the store
    on failure. ``jobs`` (default: CPU count) does not change the output, so it is not in the key.
    ``tool`` is the toolchain identity; by default it is probed (``clang``/``ld.lld --version``)
    and every prerequisite is checked first. ``check_config`` sees the final config after
    ``olddefconfig``, before the long ``make`` (the kernel lint: it raises to stop the build).
    """
    fragment = _read_fragment(spec.fragment) if spec.fragment is not None else {}
    step = kernel_step(spec, tool)
    entry = store.get(step.key)
    if entry is None:
        if tool is None:
            check_prerequisites()
        _check_source(spec)
        build = _KernelAction(KernelFiles.of(spec), fragment, jobs or os.cpu_count() or 1, check_config)
        entry = store.realize(step, build)
    return KernelBuild.from_entry(entry, spec)


def _read_fragment(path: Path) -> dict[str, str]:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        msg = f"cannot read kernel config fragment: {exc.strerror}"
        raise FileAccessError(msg, path=path) from None
    return parse_config(text, path=path, strict=True)


def _check_source(spec: KernelSpec) -> None:
    if not spec.source.is_file():
        msg = "kernel source tarball not found"
        raise FileAccessError(msg, path=spec.source)
    actual = hash_file(spec.source)
    if actual != spec.source_sha256:
        msg = f"kernel source tarball: sha256 {actual}, expected {spec.source_sha256}"
        raise ConfigError(msg, path=spec.source)


def build_environment() -> dict[str, str]:
    """The environment make runs in: PATH from the caller, everything else fixed."""
    return {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": "/nonexistent",
        "LC_ALL": "C",
        "TZ": "UTC",
        **BUILD_IDENTITY,
    }


@dataclass(frozen=True)
class _KernelAction:
    """The action of a ``kernel`` step: ``fragment`` is the parsed fragment input (the options of
    the step's parameters are merged over it); ``jobs`` and ``check_config`` cannot change the output."""

    files: KernelFiles
    fragment: Mapping[str, str]
    jobs: int
    check_config: Callable[[Mapping[str, str]], object] | None

    def __call__(self, params: KernelParams, out: Path) -> dict[str, str]:
        merged = {**self.fragment, **dict(params.options)}
        return _Build(params, self.files, merged, self.jobs, self.check_config).run(out)


class _Build:
    def __init__(
        self,
        params: KernelParams,
        files: KernelFiles,
        fragment: Mapping[str, str],
        jobs: int,
        check_config: Callable[[Mapping[str, str]], object] | None = None,
    ) -> None:
        self.params = params
        self.files = files
        self.check_config = check_config
        self.fragment = fragment
        self.jobs = jobs
        self.linux_arch = info(params.arch).linux_arch
        self.env = build_environment()

    def run(self, out: Path) -> dict[str, str]:
        # store.realize removes the whole work dir (out's parent) afterwards, success or not.
        src = out.parent / "linux"
        obj = src / "eifbuild-obj"  # a direct child of the source dir: Kbuild then uses srctree=..
        self.unpack(src)
        for patch in self.files.patches:
            self.run_tool(["patch", "-p1", "--batch", "--forward", "-i", str(patch.absolute())], src, "patch")
        obj.mkdir()
        self.configure(src, obj)
        targets = [self.params.image, *(["modules"] if self.params.modules else [])]
        log.step(f"kernel: make {' '.join(targets)} for {self.params.arch} (takes minutes)")
        self.make(src, obj, [f"-j{self.jobs}", *targets])
        self.collect(obj, out)
        return {"image_sha256": hash_file(out / self.params.image)}

    def unpack(self, src: Path) -> None:
        log.step(f"kernel: unpacking {self.files.source.name}")
        src.mkdir()
        cmd = ["tar", "-xf", str(self.files.source.absolute()), "-C", str(src), "--strip-components=1"]
        self.run_tool([*cmd, "--no-same-owner", "--no-same-permissions"], src, "unpack")
        if not (src / "Makefile").is_file() or not (src / "Kconfig").is_file():
            msg = "not a Linux source tarball (no Makefile and Kconfig below its top directory)"
            raise InputError(msg, path=self.files.source)

    def configure(self, src: Path, obj: Path) -> None:
        config = obj / ".config"
        if self.params.base == "file" and self.files.base_config is not None:
            shutil.copyfile(self.files.base_config, config)
        else:
            self.make(src, obj, [self.params.base])
        if self.fragment:
            config.write_text(
                merge_fragment(config.read_text(encoding="utf-8"), self.fragment), encoding="utf-8"
            )
        self.make(src, obj, ["olddefconfig"])
        final = parse_config(config.read_text(encoding="utf-8"))
        wrong = fragment_mismatches(final, self.fragment)
        if wrong:
            msg = (
                f"{len(wrong)} option(s) did not survive olddefconfig (missing dependencies?): "
                + ", ".join(wrong)
            )
            raise ConfigError(msg, path=self.files.fragment)
        if self.check_config is not None:
            self.check_config(final)

    def make(self, src: Path, obj: Path, args: Sequence[str]) -> None:
        cmd = ["make", "-C", str(src), "O=eifbuild-obj", f"ARCH={self.linux_arch}", "LLVM=1", *args]
        self.run_tool(cmd, src, f"make {args[-1]}")

    def run_tool(self, cmd: list[str], cwd: Path, what: str) -> None:
        log_path = cwd.parent / "build.log"
        with log_path.open("ab") as fh:
            try:
                proc = subprocess.run(
                    cmd,
                    cwd=cwd,
                    env=self.env,
                    stdin=subprocess.DEVNULL,
                    stdout=fh,
                    stderr=subprocess.STDOUT,
                    check=False,
                )
            except OSError as exc:
                msg = f"cannot run {cmd[0]}: {exc.strerror or exc}"
                raise ToolError(msg, cmd=cmd) from None
        if proc.returncode != 0:
            tail = _tail(log_path)
            log.info(f"{what}: the last {OUTPUT_TAIL_LINES} lines of its output:\n{tail.rstrip()}")
            arch = self.params.arch
            msg = f"kernel build ({arch}): {what} failed (exit {proc.returncode}): {_telling(tail)}"
            raise ToolError(msg, cmd=cmd, returncode=proc.returncode, output=tail)

    def collect(self, obj: Path, out: Path) -> None:
        boot = obj / "arch" / _LINUX_ARCH_DIR[self.linux_arch] / "boot" / self.params.image
        if not boot.is_file():
            msg = f"kernel build ({self.params.arch}): make succeeded but wrote no {boot.name}"
            raise ToolError(msg)
        image = bytearray(boot.read_bytes())
        if self.params.arch == "aarch64":
            set_text_offset(image)
        (out / self.params.image).write_bytes(image)
        shutil.copyfile(obj / ".config", out / self.params.config_name)
        for module in self.params.modules:
            built = obj / module
            if not built.is_file():
                msg = f"kernel build ({self.params.arch}): module {module} was not built (is it =m?)"
                raise ToolError(msg)
            shutil.copyfile(built, out / built.name)


def _telling(output: str) -> str:
    """The line that best says what went wrong: the first compiler-style error, else the last line."""
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    first_error = next((ln for ln in lines if _ERROR.search(ln)), None)
    return first_error or (lines[-1] if lines else "no output")


def _tail(path: Path, lines: int = OUTPUT_TAIL_LINES) -> str:
    with path.open("r", encoding="utf-8", errors="replace") as fh:
        return "".join(deque(fh, maxlen=lines))
