"""``eifbuild init``: the files of a new app repo: a two-line ``dodo.py``, a commented ``eif.toml``
and the chosen recipes, copied from the ones eifbuild ships (the same files its repo builds and tests).

In a wheel the recipes are ``eifbuild/recipes/`` and the demo kernels ``eifbuild/examples/kernel/``
(package data, see pyproject.toml); in a source checkout they are the repo's ``recipes/`` and
``examples/kernel/``. Either way the demo recipe's paths (``../examples/kernel/…``) stay valid in
the new repo, which gets the same layout.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Final, Literal

from ..arch import ARCHES
from ..errors import FileAccessError, InputError, UsageError

if TYPE_CHECKING:
    from collections.abc import Sequence

    from ..arch import Arch

Bootstrap = Literal["demo", "aws"]

DODO: Final = (
    "# Tasks for ./eif.toml: doit eif | doit check | doit list | doit clean\n"
    "from eifbuild.tasks import *  # noqa: F403\n"
)
_RECIPES: Final[dict[Bootstrap, tuple[str, ...]]] = {
    # the app kernels (#! scripts, IPv4/IPv6 loopback, the runtimes' system calls): a first enclave
    # runs real apps; linux-source-6.12 is what `eifbuild kernel recipes/demo-app.toml --check`
    # rebuilds them from. The tiny profile (recipes/demo.toml) stays in eifbuild's repo.
    "demo": ("recipes/demo-app.toml", "recipes/linux-source-6.12.toml"),
    "aws": ("recipes/aws-nitro-cli-1.5.0.toml",),
}
# the kernel folders the recipes' sources name (`../examples/kernel/app/<arch>/…`)
_KERNELS: Final[dict[Bootstrap, tuple[str, ...]]] = {
    "demo": ("examples/kernel/app/x86_64", "examples/kernel/app/aarch64"),
    "aws": (),
}


@dataclass(frozen=True)
class ScaffoldApp:
    """The app of the new eif.toml: an OCI image or a rootfs directory, and maybe its command."""

    oci: str | None = None
    rootfs: str | None = None
    cmd: tuple[str, ...] = ()


def shipped_dir() -> Path:
    """The directory holding eifbuild's ``recipes/`` and ``examples/kernel/``: the installed package,
    else the source checkout around it."""
    package = Path(__file__).resolve().parent.parent
    for base in (package, package.parent):
        if (base / "recipes" / "demo-app.toml").is_file():
            return base
    msg = "eifbuild's recipes are missing from this installation; reinstall eifbuild"
    raise FileAccessError(msg, path=package / "recipes")


def _toml(value: str | Sequence[str]) -> str:
    """A TOML basic string or array of them (JSON's escapes are TOML's)."""
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return "[" + ", ".join(_toml(item) for item in value) + "]"


def default_arches(bootstrap: Bootstrap) -> tuple[Arch, ...]:
    """What a new project builds when its app does not say: AWS's aarch64 kernel needs a lock first."""
    return ARCHES if bootstrap == "demo" else ("x86_64",)


def _arch_line(bootstrap: Bootstrap, arches: Sequence[Arch]) -> str:
    listed = f"{_toml(list(arches)):<28}"
    if bootstrap == "aws" and "aarch64" in arches:
        return f"{listed} # AWS's aarch64 kernel: first `eifbuild lock --trust-on-first-use`"
    if bootstrap == "aws":
        return f"{listed} # aarch64: first `eifbuild lock --trust-on-first-use`"
    return f"{listed} # one or both" if len(arches) == len(ARCHES) else f"{listed} # the arches the image has"


def _eif_section(name: str, bootstrap: Bootstrap, arches: Sequence[Arch]) -> str:
    arch = _arch_line(bootstrap, arches)
    if bootstrap == "demo":
        recipes = '["recipes/demo-app.toml"] # the app kernels in examples/kernel/app/, pinned by sha256'
    else:
        recipes = '["recipes/aws-nitro-cli-1.5.0.toml"]   # AWS\'s kernel, init, nsm.ko and cmdline'
    return f"""\
# What `doit eif` builds (written by `eifbuild init`; every key is in eifbuild's README, "eif.toml").

[eif]
name = {_toml(name):<28} # ImageName
version = "0.1.0"                    # ImageVersion
arch = {arch}
output = "build"                     # build/<name>-<arch>.eif and its .pcr.json
recipes = {recipes}
# build_time = "2024-01-01T00:00:00+00:00"   # default: SOURCE_DATE_EPOCH, else 1970-01-01
# metadata = {{ team = "payments" }}   # merged into the EIF's CustomMetadata
"""


def _bootstrap_section(bootstrap: Bootstrap) -> str:
    if bootstrap == "aws":
        return """
[bootstrap]                          # every part from the recipe's [defaults], like nitro-cli
# init = { compile = "eifbuild-init" }   # eifbuild's own init instead of AWS's prebuilt one
"""
    return """
[bootstrap]                          # kernel, kernel config and cmdline: the recipe's [defaults]
init = { compile = "eifbuild-init" } # eifbuild's own init, compiled by zig
nsm = "none"                         # the demo kernels have no module support
"""


def _app_section(app: ScaffoldApp, tool_made: bool) -> str:
    lines = ["", "[app]"]
    if app.oci is not None:
        lines.append(
            f"oci = {_toml(app.oci)}   # a registry image pinned by digest, an OCI layout or archive"
        )
    else:
        lines.append(f"rootfs = {_toml(app.rootfs or 'rootfs')}   # the app's files, under /rootfs")
        if tool_made:
            lines.append('modes = "preserve"   # made by a tool, not in git: its modes are its own')
        else:
            lines.append('# modes = "preserve"   # for a rootfs made by a tool (debootstrap …), not git')
    if app.cmd:
        lines.append(f"cmd = {_toml(app.cmd)}   # /cmd: what init runs")
    else:
        lines.append('# cmd = ["/bin/app"]                # default: the image\'s Entrypoint + Cmd')
    lines.append('# env = { KEY = "value" }           # /env, the whole environment of the command')
    return "\n".join(lines) + "\n"


def eif_toml(
    name: str,
    bootstrap: Bootstrap,
    app: ScaffoldApp,
    arches: Sequence[Arch] | None = None,
    *,
    tool_made: bool = False,
) -> str:
    """The commented eif.toml of a new project (``arches``: default :func:`default_arches`;
    ``tool_made``: the rootfs is not under version control, so its modes are kept)."""
    arches = default_arches(bootstrap) if arches is None else arches
    sections = _eif_section(name, bootstrap, arches) + _bootstrap_section(bootstrap)
    return sections + _app_section(app, tool_made)


def made_by_a_tool(rootfs: Path) -> bool:
    """A rootfs directory that exists and that git does not track (debootstrap's, an unpacked
    image): its modes mean something, so ``modes = "preserve"`` fits it; git records only x bits."""
    if not rootfs.is_dir():
        return False
    try:
        proc = subprocess.run(
            ["git", "-C", str(rootfs), "ls-files", "--", "."], capture_output=True, check=False, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return True
    return proc.returncode != 0 or not proc.stdout.strip()


def image_arches(ref: str, project_dir: Path) -> tuple[Arch, ...]:
    """The arches image ``ref`` has (its index, manifests and configs are read through a
    throw-away store; a tag is resolved at its registry)."""
    from .. import oci  # noqa: PLC0415 - registry code only for an image
    from ..store import Store  # noqa: PLC0415

    with tempfile.TemporaryDirectory(prefix="eifbuild-init-") as tmp:
        return oci.image_arches(ref, store=Store(tmp), project_dir=project_dir)


def choose_arches(bootstrap: Bootstrap, ref: str, found: Sequence[Arch]) -> tuple[Arch, ...]:
    """The arches to write for an image that has ``found``: fewer for ``--bootstrap aws`` where it can."""
    if not found:
        msg = f"image {ref!r} has no linux/amd64 or linux/arm64 image: eifbuild builds for x86_64 and aarch64"
        raise InputError(msg)
    preferred = tuple(a for a in found if a in default_arches(bootstrap))
    return preferred or tuple(found)


def next_step(directory: Path, bootstrap: Bootstrap, app: ScaffoldApp, arches: Sequence[Arch]) -> str:
    """What to run after ``eifbuild init``: ``doit eif``, after a lock when something is unpinned."""
    from .. import oci  # noqa: PLC0415

    tag = app.oci is not None and oci.registry_tag(app.oci, directory) is not None
    unpinned_kernel = bootstrap == "aws" and "aarch64" in arches
    where = "" if directory == Path() else f"cd {directory} && "
    lock = "eifbuild lock --trust-on-first-use && " if tag or unpinned_kernel else ""
    return f"{where}{lock}doit eif"


def _check_app(app: ScaffoldApp) -> None:
    if (app.oci is None) == (app.rootfs is None):
        msg = "give the app as exactly one of --oci REF or --rootfs DIR"
        raise UsageError(msg, key="--oci/--rootfs")
    if app.rootfs is not None and not app.cmd:
        msg = "a rootfs directory needs the command to run: add --cmd /path/in/rootfs"
        raise UsageError(msg, key="--cmd")


def project_files(
    name: str,
    bootstrap: Bootstrap,
    app: ScaffoldApp,
    arches: Sequence[Arch] | None = None,
    directory: Path = Path(),
) -> dict[str, str | Path]:
    """Each file of the new project (path relative to it) → its text, or the shipped file to copy."""
    _check_app(app)
    shipped = shipped_dir()
    tool_made = app.rootfs is not None and made_by_a_tool(directory / app.rootfs)
    toml = eif_toml(name, bootstrap, app, arches, tool_made=tool_made)
    files: dict[str, str | Path] = {"dodo.py": DODO, "eif.toml": toml}
    for recipe in _RECIPES[bootstrap]:
        files[recipe] = shipped / recipe
    for folder in _KERNELS[bootstrap]:
        for kernel_file in sorted((shipped / folder).iterdir()):
            if kernel_file.is_file():
                files[kernel_file.relative_to(shipped).as_posix()] = kernel_file
    return files


def init_project(
    directory: Path,
    *,
    bootstrap: Bootstrap,
    app: ScaffoldApp,
    name: str | None = None,
    arches: Sequence[Arch] | None = None,
) -> list[Path]:
    """Write a new project into ``directory``; return the files written. An existing file is an
    error naming it, and then nothing is written."""
    name = name or directory.absolute().name
    files = project_files(name, bootstrap, app, arches, directory)
    existing = [rel for rel in files if os.path.lexists(directory / rel)]
    if existing:
        more = f" (and {len(existing) - 1} more)" if len(existing) > 1 else ""
        msg = f"already exists{more}; eifbuild init never overwrites a file"
        raise FileAccessError(msg, path=directory / existing[0])
    written = []
    for rel, content in files.items():
        target = directory / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, Path):
            shutil.copyfile(content, target)
        else:
            target.write_text(content)
        written.append(target)
    return written
