"""``doit check``: rebuild the project somewhere else and compare every EIF and PCR with ``build/``.

EIFs signed with a KMS or PKCS#11 key carry a randomized ECDSA signature, so their bytes differ
from build to build while PCR0/1/2 and PCR8 do not: for those only the PCRs are compared, and the
report says so.

The copy lives at another path, builds into a fresh store and output dir, under another umask,
time zone and locale. Only the download cache (verified by hash on every use), zig's global cache
(the musl libc it builds once per target) and the registry images of the project's store (blobs
pinned by digest, copied in re-hashed) are shared with the project, so the check does not pay for
downloads or musl again and needs no registry; every step of the build itself runs again.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .. import log, toolchain
from ..errors import FetchError, SigningError, ToolError
from ..store import Store
from ..store.remote import REMOTE_ENV
from ..util.fsutil import hash_file, remove_tree
from ..util.safetree import UnsafePathError, copy_node, tree_writer
from .config import FAILURE_FILE_ENV, ORIGIN_ENV
from .inputs import LocalNode, OciNode

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ..util.safetree import TreeWriter
    from .plan import Plan

# What a fresh clone would not have: caches, outputs, VCS data.
_SKIP = frozenset(
    {".git", ".hg", "__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".hypothesis"}
)
CHECK_UMASK = 0o077
CHECK_ENV = {"TZ": "Pacific/Kiritimati", "LANG": "de_DE.UTF-8", "LC_ALL": "de_DE.UTF-8"}


@dataclass(frozen=True)
class CheckReport:
    ok: bool
    text: str


def _is_venv(path: Path) -> bool:
    return (path / "pyvenv.cfg").is_file()


def _copy_tree(writer: TreeWriter, source: Path, rel: str, skip: set[Path]) -> None:
    """Copy the directory ``source`` to ``rel`` in the copy (``""``: its top), but what a fresh
    clone would not have."""

    def wanted(path: Path) -> bool:
        return path.name not in _SKIP and path.absolute() not in skip and not _is_venv(path)

    if rel:
        copy_node(writer, source, rel)
    for dirpath, dirnames, filenames in os.walk(source):
        here = Path(dirpath)
        dirnames[:] = sorted(n for n in dirnames if wanted(here / n))  # symlinks among them: not walked
        for name in sorted([*dirnames, *filenames]):
            if wanted(here / name):
                copy_node(writer, here / name, _join(rel, (here / name).relative_to(source).as_posix()))


def _join(rel: str, name: str) -> str:
    return f"{rel}/{name}" if rel else name


def _git_files(root: Path) -> list[str] | None:
    """The files a fresh clone plus the user's new files would hold (tracked, and untracked but not
    ignored), relative to ``root``; None where ``root`` is not in a git work tree."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            capture_output=True,
            check=False,
            timeout=60,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        return None
    return [name for name in os.fsdecode(proc.stdout).split("\0") if name]


def _copy_project(plan: Plan, dest: Path, skip: set[Path]) -> None:
    """Copy what the build reads: in a git work tree its files (tracked or new, not ignored) and
    every path input of the plan inside the project (a rootfs a tool made is often ignored);
    elsewhere the whole project. Never a venv, the store, the output dir or VCS data.

    The copy is written by the one safe tree writer, modes (setuid too) and device nodes kept (it
    is the user's own tree): a path below a symlink of the project is not copied through the link
    (that would write into what the link points to); the copied link leads where it did."""
    root = plan.project.root
    files = _git_files(root)
    with tree_writer(dest, preserve_special=True) as writer:
        if files is None:
            _copy_tree(writer, root, "", skip)
            return
        for name in files:
            source = root / name
            if any(part in _SKIP for part in Path(name).parts) or not os.path.lexists(source):
                continue  # deleted but still tracked, or VCS data
            if any(parent.absolute() in skip or _is_venv(parent) for parent in source.parents):
                continue
            _copy_safely(writer, source, Path(name).as_posix(), None)
        for path in _local_inputs(plan):
            if path.is_relative_to(root) and os.path.lexists(path):
                _copy_safely(writer, path, path.relative_to(root).as_posix(), skip)


def _copy_safely(writer: TreeWriter, source: Path, rel: str, skip: set[Path] | None) -> None:
    """One file or (with ``skip``) tree into the copy; not through a symlink the copy holds."""
    try:
        if skip is not None and source.is_dir() and not source.is_symlink():
            _copy_tree(writer, source, rel, skip)
        else:
            copy_node(writer, source, rel)
    except UnsafePathError as exc:
        log.info(f"check: not copying {rel}: {exc}")


def _local_inputs(plan: Plan) -> list[Path]:
    return sorted({node.path.absolute() for node in plan.nodes() if isinstance(node, LocalNode)})


def _rebuild(plan: Plan, copy_root: Path, store: Path, *, failure: Path) -> subprocess.CompletedProcess[str]:
    config = copy_root / plan.project.path.relative_to(plan.project.root)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LC_", "EIFBUILD_CACHE"))}
    env.update(CHECK_ENV, EIFBUILD_CACHE=str(store), EIFBUILD_CONFIG=str(config))
    env[REMOTE_ENV] = ""  # the check's point is to rebuild everything: no shared cache
    env[FAILURE_FILE_ENV] = str(failure)
    env[ORIGIN_ENV] = str(plan.project.root)  # an allowed path outside the project: the original's file
    # zig's libc (musl) builds are shared (the user's zig cache); every compile itself is redone
    zig_global = toolchain.zig_global_cache_dir()
    env[toolchain.ZIG_CACHE_ENV] = str(zig_global)
    dodo = store.parent / "dodo.py"
    dodo.write_text("from eifbuild.tasks import *  # noqa: F403\n")
    cmd = [sys.executable, "-m", "doit", "--file", str(dodo), "--dir", str(copy_root), "eif"]

    def umask() -> None:
        os.umask(CHECK_UMASK)

    return subprocess.run(
        cmd, cwd=copy_root, env=env, capture_output=True, text=True, preexec_fn=umask, check=False
    )


RANDOMIZED_NOTE = (
    "EIF bytes not compared: signed with a KMS/PKCS#11 key, whose ECDSA signatures are randomized"
)


def _values(eif: Path, pcrs: Path, *, file_bytes: bool) -> dict[str, str]:
    found = {"sha256": hash_file(eif)} if file_bytes else {}
    found.update((k, v) for k, v in json.loads(pcrs.read_text()).items() if k.startswith("PCR"))
    return found


def _compare(plan: Plan, copy_root: Path) -> tuple[bool, list[str]]:
    """One line per arch when everything matches; one line per difference otherwise."""
    lines = []
    ok = True
    file_bytes = compares_file_bytes(plan)
    for arch, node in plan.eifs.items():
        ours = _values(node.out.eif, node.out.pcrs, file_bytes=file_bytes)
        rel = plan.project.root
        theirs = _values(
            copy_root / node.out.eif.relative_to(rel),
            copy_root / node.out.pcrs.relative_to(rel),
            file_bytes=file_bytes,
        )
        differ = [name for name in ours.keys() | theirs.keys() if ours.get(name) != theirs.get(name)]
        if not differ:
            shown = ", ".join(f"{k} {v[:16]}…" for k, v in ours.items())
            what = "identical" if file_bytes else "PCRs identical"
            lines.append(f"{arch}: {what} ({shown})")
            continue
        ok = False
        for name in sorted(differ):
            lines.append(f"{arch}: {name} differs: {ours.get(name)} here, {theirs.get(name)} in the rebuild")
    return ok, lines


def compares_file_bytes(plan: Plan) -> bool:
    """False when the EIFs are signed with a randomized signature (KMS, PKCS#11): PCRs only."""
    return plan.project.sign is None or plan.project.sign.deterministic


def verdict(ok: bool, *, file_bytes: bool) -> str:
    if not ok:
        return "NOT reproducible: see the differences above"
    if file_bytes:
        return "reproducible: every EIF and PCR matches"
    return f"reproducible: every PCR matches ({RANDOMIZED_NOTE})"


def _seed_images(plan: Plan, store: Path) -> None:
    """Copy the registry images the project's store holds into the fresh store: blobs pinned by
    digest, re-hashed on the way and verified again by the rebuild, so the check needs no registry."""
    keys: set[str] = set()
    for node in plan.nodes():
        image = node.cached() if isinstance(node, OciNode) else None
        if image is not None:
            keys |= image.store_keys()
    if keys:
        Store(store).copy_from(plan.store, keys)


def _rebuild_failure(result: subprocess.CompletedProcess[str], copy_root: Path, failure: Path) -> Exception:
    """A rebuild that could not fetch an input, or could not sign (a KMS key it may not use, a
    token or PIN it lacks), means the check cannot run (a FetchError, a SigningError): neither says
    anything about reproducibility. Any other failure is a finding: the project does not build from
    a clean copy (a ToolError)."""
    try:
        kind, _, message = failure.read_text().partition(" ")
    except FileNotFoundError:
        kind, message = "", ""
    if kind == FetchError.__name__:
        return FetchError(f"the check cannot run: {message}")
    if kind == SigningError.__name__:
        return SigningError(f"the check cannot run: the rebuild cannot sign: {message}")
    tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
    msg = f"the rebuild in {copy_root} failed (exit {result.returncode}):\n{tail}"
    return ToolError(msg, returncode=result.returncode, output=result.stdout + result.stderr)


@contextmanager
def rebuilt_elsewhere(plan: Plan) -> Iterator[Path]:
    """Copy ``plan``'s project elsewhere, rebuild it in a fresh store and yield the copy's root
    (removed afterwards). Raises as :func:`self_check` says when the rebuild fails."""
    root = plan.project.root
    work = Path(tempfile.mkdtemp(prefix="eifbuild-check-"))
    try:
        copy_root = work / "elsewhere" / root.name
        skip = {plan.store.root.absolute(), plan.project.output.absolute()}
        log.step(f"copy the project to {copy_root}")
        _copy_project(plan, copy_root, skip)
        _seed_images(plan, work / "store")
        log.step("rebuild in a fresh store (umask 077, TZ Pacific/Kiritimati, LANG de_DE.UTF-8)")
        result = _rebuild(plan, copy_root, work / "store", failure=work / "failure")
        if result.returncode != 0:
            raise _rebuild_failure(result, copy_root, work / "failure")
        yield copy_root
    finally:
        remove_tree(work)


def self_check(plan: Plan) -> CheckReport:
    """Rebuild ``plan``'s project from a copy and compare; the EIFs in build/ must exist already.

    Raises :class:`ToolError` when the copy does not build (a finding), and :class:`FetchError` or
    :class:`SigningError` when the check cannot run (an input outside the project cannot be
    fetched, the signing key cannot be used)."""
    with rebuilt_elsewhere(plan) as copy_root:
        ok, lines = _compare(plan, copy_root)
    return CheckReport(ok, "\n".join([*lines, verdict(ok, file_bytes=compares_file_bytes(plan))]))
