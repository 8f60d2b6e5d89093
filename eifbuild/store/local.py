"""The content-addressed store: every build step runs once per key and its output is kept read-only.

A :class:`~eifbuild.store.step.Step` is a pure description (typed parameters naming kind and kind
version, input digests, tool identity); its key is the sha256 of its canonical JSON.
:meth:`Store.realize` runs a step's builder at most once per key, even across processes, and hands
it the step's parameters (the very object the key was computed from):

- the builder writes into a fresh temp dir inside the store (``tmp/``);
- on success the outputs are hashed, made read-only and the dir is renamed to ``<key[:2]>/<key>/``;
- the record ``<key[:2]>/<key>.json`` (step, output digests, size, creation time) is written last, by
  atomic rename: it is the commit marker. A dir without its record is garbage and is rebuilt;
- a per-key ``flock`` serialises builders of the same key; the second process finds the record.

Two optional hooks let a shared cache (``eifbuild.remote``) join in without the store knowing it:
``substituter(step, out_dir)`` is asked, under the key's lock, before a step is built; when it fills
``out_dir`` and returns a :class:`Substituted`, the entry is committed like a built one (the store
hashes the outputs itself); :meth:`Store.substitute` asks it without building. ``on_built(entry)``
is told of every entry built here.

A build that dies (SIGKILL, power loss) leaves its temp dir, maybe outputs without a record or a
record's temp file: :meth:`Store.reclaim_garbage` removes them, each only while holding the lock its
writer held (so never a live build's), and is run by ``store gc`` and by the first build of a process.

Layout::

    <store>/ab/abcdef…/          outputs (read-only)
    <store>/ab/abcdef….json      record (commit marker)
    <store>/tmp/                 builds in progress, each dir named after the lock its builder holds
    <store>/downloads/<name>…    downloads kept across runs (resumed, or shared while a lock <name> is held)
    <store>/locks/abcdef….lock   per-key locks
    <store>/roots/<name>.json    keys a project's last build used (for gc)
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import stat
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

from .. import log
from ..errors import StoreError
from ..util import treepath
from ..util.fsutil import (
    atomic_write,
    exclusive_lock,
    hash_file,
    lock_if_free,
    make_readonly,
    not_writable,
    remove_tree,
    tree_size,
    write_if_writable,
)
from ..util.safetree import UnsafePathError, copy_node, tree_writer
from .step import RawParams, Step, StepParams, canonical_json

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Mapping

RECORD_FORMAT: Final = 1
_HEX: Final = frozenset("0123456789abcdef")


P = TypeVar("P", bound=StepParams)
# A step's action: given the step's parameters and an empty output dir, fill it (and maybe return meta).
Builder = Callable[[P, Path], "Mapping[str, Any] | None"]


@dataclass(frozen=True)
class Substituted:
    """A substituter filled the output dir: the step's ``meta`` and where the outputs came from.

    ``outputs``, when given, is the dir's listing as the store would record it (sha256, size and
    executable bit of every file, target of every symlink), hashed by the substituter from the files
    it wrote and checked against what it expected; the store then records it instead of reading
    every byte a second time. None: the store hashes the dir itself."""

    meta: Mapping[str, Any]
    origin: str
    outputs: Mapping[str, Mapping[str, Any]] | None = None


Substituter = Callable[["Step[Any]", Path], "Substituted | None"]
OnBuilt = Callable[["StoreEntry"], None]


@dataclass(frozen=True)
class StoreEntry:
    """A committed store entry: its output dir and its record."""

    key: str
    path: Path
    record: Mapping[str, Any]

    @property
    def outputs(self) -> Mapping[str, Mapping[str, Any]]:
        outputs: Mapping[str, Mapping[str, Any]] = self.record["outputs"]
        return outputs

    @property
    def kind(self) -> str:
        return str(self.record["step"]["kind"])

    def file(self, name: str) -> Path:
        """Path of one output; a name the step did not produce is a :class:`StoreError`."""
        if name not in self.outputs:
            msg = f"has no output {name!r} (outputs: {', '.join(sorted(self.outputs)) or 'none'})"
            raise StoreError(msg, key=self.key)
        return self.path / name

    def digest(self, name: str) -> str:
        self.file(name)
        return str(self.outputs[name]["sha256"])

    @property
    def meta(self) -> Mapping[str, Any]:
        """What the builder returned (e.g. a source's origin and tree digest); empty if nothing."""
        meta: Mapping[str, Any] = self.record.get("meta", {})
        return meta

    @property
    def size(self) -> int:
        return int(self.record.get("size", 0))

    @property
    def created(self) -> str:
        return str(self.record.get("created", ""))


@dataclass(frozen=True)
class Problem:
    key: str
    message: str


@dataclass(frozen=True)
class Garbage:
    """What a build that died left in the store: a temp dir or file, or outputs without a record."""

    path: Path
    size: int


def describe_garbage(garbage: list[Garbage]) -> str:
    """``3 leftovers of killed builds (1,234 bytes)``."""
    noun = "leftover of a killed build" if len(garbage) == 1 else "leftovers of killed builds"
    return f"{len(garbage)} {noun} ({sum(g.size for g in garbage):,} bytes)"


# Stores whose garbage this process has reclaimed already (once, at its first build in each).
_RECLAIMED: set[Path] = set()


def _is_key(name: str) -> bool:
    return len(name) == 64 and set(name) <= _HEX


def _scan_outputs(root: Path) -> dict[str, dict[str, Any]]:
    """Describe every file and symlink below ``root`` (relative POSIX path → type, sha256/target, size)."""
    outputs: dict[str, dict[str, Any]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]):
            full = Path(dirpath, name)
            rel = full.relative_to(root).as_posix()
            st = full.lstat()
            if stat.S_ISLNK(st.st_mode):
                outputs[rel] = {"type": "symlink", "target": os.readlink(full)}
            elif stat.S_ISREG(st.st_mode):
                outputs[rel] = {
                    "type": "file",
                    "sha256": hash_file(full),
                    "size": st.st_size,
                    "executable": bool(st.st_mode & 0o111),
                }
            else:
                msg = f"unsupported file type in step output: {rel}"
                raise StoreError(msg)
    return outputs


@dataclass(frozen=True)
class _Node:
    kind: str
    target: str = ""


def listing_problems(outputs: Mapping[str, Mapping[str, Any]], dirs: Iterable[str] = ()) -> list[str]:
    """What makes an entry's listing unsafe to write or trust (a remote manifest's, a record's, what
    is on disk): a path through a symlink or a file, a symlink out of the entry."""
    nodes = {name: _Node("dir") for name in dirs}
    for name, out in outputs.items():
        nodes[name] = _Node(str(out.get("type")), str(out.get("target", "")))
    return treepath.listing_problems(nodes)


def _copy_outputs(entry: StoreEntry, _: RawParams, out: Path) -> Mapping[str, Any]:
    if problems := listing_problems(entry.outputs):
        raise StoreError(problems[0], key=entry.key)
    try:
        with tree_writer(out) as writer:
            for name in sorted(entry.outputs):
                copy_node(writer, entry.path / name, name)
    except UnsafePathError as exc:
        raise StoreError(str(exc), key=entry.key) from None
    return entry.meta


class Store:
    def __init__(
        self,
        root: str | os.PathLike[str],
        *,
        substituter: Substituter | None = None,
        on_built: OnBuilt | None = None,
    ) -> None:
        self.root = Path(root).absolute()
        self.substituter = substituter
        self.on_built = on_built

    @classmethod
    def for_project(cls, project_dir: str | os.PathLike[str]) -> Store:
        """``$EIFBUILD_CACHE`` if set, else ``cache/`` in ``project_dir`` (the caller finds the project)."""
        override = os.environ.get("EIFBUILD_CACHE")
        return cls(Path(override) if override else Path(project_dir) / "cache")

    @classmethod
    def for_user(cls) -> Store:
        """``$EIFBUILD_CACHE`` if set, else ``store/`` in the user's cache dir (platformdirs: on Linux
        ``$XDG_CACHE_HOME/eifbuild/store``, ``~/.cache/eifbuild/store``): for commands run outside any
        project, which must not leave a ``cache/`` in whatever directory they ran in."""
        override = os.environ.get("EIFBUILD_CACHE")
        if override:
            return cls(Path(override))
        import platformdirs  # noqa: PLC0415 - only outside a project

        return cls(platformdirs.user_cache_path("eifbuild") / "store")

    # -- paths -----------------------------------------------------------------------------------
    def entry_dir(self, key: str) -> Path:
        return self.root / key[:2] / key

    def record_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.json"

    @property
    def tmp_dir(self) -> Path:
        return self.root / "tmp"

    @property
    def downloads_dir(self) -> Path:
        """Downloads that outlive a run: a killed one resumes, a finished one serves other processes.

        A file is named ``<name>`` or ``<name>.<suffix>``, ``<name>`` being the lock its writers
        hold; ``gc`` removes those whose lock nobody holds.
        """
        return self.root / "downloads"

    # -- lookup ----------------------------------------------------------------------------------
    def get(self, key: str) -> StoreEntry | None:
        """The committed entry for ``key``, or None (an entry without its record does not exist)."""
        try:
            raw = self.record_path(key).read_bytes()
        except FileNotFoundError:
            return None
        try:
            record = json.loads(raw)
        except json.JSONDecodeError:
            msg = f"record {self.record_path(key)} is not valid JSON; run 'eifbuild store verify'"
            raise StoreError(msg, key=key) from None
        return StoreEntry(key, self.entry_dir(key), record)

    def __contains__(self, key: str) -> bool:
        return self.record_path(key).exists()

    # -- build -----------------------------------------------------------------------------------
    def lock(self, key: str) -> contextlib.AbstractContextManager[None]:
        """Exclusive per-key lock across processes (released when the holder dies)."""
        return exclusive_lock(self.root / "locks" / f"{key}.lock")

    def realize(self, step: Step[P], build: Builder[P], *, substitute: bool = True) -> StoreEntry:
        """Return the entry for ``step``, running ``build(step.params, out_dir)`` only if no process
        did already.

        ``build`` fills ``out_dir`` (an empty directory) with the step's outputs and may return a
        small JSON-able mapping, kept in the record as ``meta``. If it raises, nothing is published
        and the temp dir is removed. ``substitute=False``: the substituter is not asked (a caller
        that asked :meth:`substitute` already and has the outputs in hand).
        """
        key = step.key
        entry = self.get(key)
        if entry is not None:
            return entry
        self._reclaim_once()
        self._check_writable(step)
        with self.lock(key):
            entry = self.get(key)  # another process may have built it while we waited
            if entry is not None:
                return entry
            if substitute and self.substituter is not None:
                entry = self._substitute_locked(step, key, self.substituter)
                if entry is not None:
                    return entry
            entry = self._build_locked(step, key, build)
        if self.on_built is not None:
            self.on_built(entry)
        return entry

    def substitute(self, step: Step[Any]) -> StoreEntry | None:
        """The entry for ``step`` if this store has it or its substituter fills it; never builds.

        For steps whose outputs come from elsewhere anyway (an image's blobs): the substituter is
        asked before the caller goes to its own source, and the caller commits what it fetched with
        ``realize(…, substitute=False)`` so the substituter is asked once.
        """
        key = step.key
        entry = self.get(key)
        if entry is not None or self.substituter is None:
            return entry
        self._reclaim_once()
        self._check_writable(step)
        with self.lock(key):
            return self.get(key) or self._substitute_locked(step, key, self.substituter)

    def _check_writable(self, step: Step[Any]) -> None:
        """Check that the store can be written before a step is built or pulled into it: a store that
        cannot be (a read-only mount of a shared cache) serves what it holds, and otherwise this is
        one :class:`StoreError` naming its directory."""
        for path in (self.root / "locks", self.tmp_dir):
            try:
                path.mkdir(parents=True, exist_ok=True)
                writable = os.access(path, os.W_OK)
            except OSError as exc:
                if not not_writable(exc):
                    raise
                writable = False
            if not writable:
                msg = (
                    f"the store {self.root} cannot be written ({path.name}/ is read-only) and lacks "
                    f"{step.kind} {step.key[:12]}: build with a writable store ($EIFBUILD_CACHE)"
                )
                raise StoreError(msg)

    def _substitute_locked(self, step: Step[Any], key: str, substituter: Substituter) -> StoreEntry | None:
        with self._work_dir(key) as out:
            found = substituter(step, out)
            if found is None:
                return None
            extra = {"substituted": found.origin}
            entry = self._publish(step, key, out, found.meta, extra, outputs=found.outputs)
        log.info(f"store: substituted {step.kind} {key[:12]} from {found.origin}")
        return entry

    def _build_locked(self, step: Step[P], key: str, build: Builder[P]) -> StoreEntry:
        with self._work_dir(key) as out:
            entry = self._publish(step, key, out, build(step.params, out) or {}, {})
        log.info(f"store: built {step.kind} {key[:12]}")
        return entry

    @contextlib.contextmanager
    def _work_dir(self, key: str) -> Iterator[Path]:
        """An empty output dir in ``tmp/``, removed afterwards whatever happened."""
        self.tmp_dir.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix=f"{key[:16]}.", dir=self.tmp_dir))
        try:
            out = work / "out"
            out.mkdir()
            yield out
        finally:
            remove_tree(work)

    def _publish(
        self,
        step: Step[Any],
        key: str,
        out: Path,
        meta: Mapping[str, Any],
        extra: Mapping[str, Any],
        *,
        outputs: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> StoreEntry:
        """Hash ``out`` (unless a substituter gave its ``outputs``), make it read-only, move it into
        place and write the record (last)."""
        outputs = {k: dict(v) for k, v in outputs.items()} if outputs is not None else _scan_outputs(out)
        make_readonly(out)
        final = self.entry_dir(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        if os.path.lexists(final):  # garbage from a run killed before its record was written
            remove_tree(final)
        os.rename(out, final)
        record: dict[str, Any] = {
            "format": RECORD_FORMAT,
            "key": key,
            "step": step.describe(),
            "outputs": outputs,
            "size": sum(o.get("size", 0) for o in outputs.values()),
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            **extra,
        }
        if meta:
            record["meta"] = dict(meta)
        with atomic_write(self.record_path(key), mode=0o444) as fh:
            fh.write(json.dumps(record, indent=1, sort_keys=True).encode() + b"\n")
        return StoreEntry(key, final, record)

    def copy_from(self, other: Store, keys: Iterable[str]) -> list[str]:
        """Copy the committed entries ``keys`` of another store into this one; return those copied.

        Each copy is re-hashed on its way in and must match the other store's record, so a corrupt
        entry is never copied (this store builds it itself instead).
        """
        copied = []
        for key in sorted(keys):
            entry = other.get(key)
            if entry is None or key in self:
                continue
            step = Step.recorded(entry.record["step"])
            if step.key != key:
                continue
            new = self.realize(step, functools.partial(_copy_outputs, entry))
            if new.outputs != entry.outputs:
                log.warn(f"store entry {key} in {other.root} is corrupt: not copied")
                with self.lock(key):
                    self.remove(key)
                continue
            copied.append(key)
        return copied

    # -- maintenance -----------------------------------------------------------------------------
    def keys(self) -> Iterator[str]:
        """Keys of committed entries, sorted."""
        if not self.root.is_dir():
            return
        for prefix in sorted(p for p in self.root.iterdir() if len(p.name) == 2 and p.is_dir()):
            for rec in sorted(prefix.glob("*.json")):
                if _is_key(rec.stem) and rec.stem.startswith(prefix.name):
                    yield rec.stem

    def entries(self) -> Iterator[StoreEntry]:
        for key in self.keys():
            entry = self.get(key)
            if entry is not None:
                yield entry

    def check(self, entry: StoreEntry) -> list[str]:
        """Re-hash one entry; return what is wrong with it (empty when intact)."""
        if not entry.path.is_dir():
            return ["output directory is missing"]
        try:
            actual = _scan_outputs(entry.path)
        except (OSError, StoreError) as exc:
            return [f"cannot read outputs: {exc}"]
        problems = []
        for name, want in sorted(entry.outputs.items()):
            got = actual.get(name)
            if got is None:
                problems.append(f"{name}: missing")
            elif got.get("sha256") != want.get("sha256") or got.get("target") != want.get("target"):
                expected = want.get("sha256") or want.get("target")
                problems.append(f"{name}: content changed (expected {expected})")
            elif got.get("executable") != want.get("executable"):
                problems.append(f"{name}: executable bit changed")
        problems.extend(f"{name}: not in the record" for name in sorted(set(actual) - set(entry.outputs)))
        unsafe = listing_problems(entry.outputs) + listing_problems(actual)  # e.g. a link out of the store
        problems.extend(f"unsafe: {p}" for p in dict.fromkeys(unsafe))
        return problems

    def remove(self, key: str) -> None:
        """Drop an entry: record first (so it stops existing at once), then its outputs."""
        with contextlib.suppress(FileNotFoundError):
            self.record_path(key).unlink()
        remove_tree(self.entry_dir(key))

    def verify(self, *, repair: bool = False) -> list[Problem]:
        problems: list[Problem] = []
        for entry in self.entries():
            found = self.check(entry)
            problems.extend(Problem(entry.key, p) for p in found)
            if found and repair:
                with self.lock(entry.key):
                    self.remove(entry.key)
        return problems

    def write_roots(self, name: str, keys: Iterable[str]) -> None:
        """Record the keys a project's last build used; ``gc`` keeps them (a read-only store: no gc)."""
        write_if_writable(self.root / "roots" / f"{name}.json", canonical_json(sorted(set(keys))) + b"\n")

    def roots(self) -> set[str]:
        keys: set[str] = set()
        roots_dir = self.root / "roots"
        if roots_dir.is_dir():
            for path in roots_dir.glob("*.json"):
                try:
                    keys.update(json.loads(path.read_bytes()))
                except (json.JSONDecodeError, TypeError):
                    log.warn(f"ignoring unreadable gc roots file {path}")
        return keys

    def _garbage_candidates(self, *, downloads: bool) -> Iterator[tuple[Path, str]]:
        """Every temp dir, output dir without a record and record temp file (and with ``downloads``,
        every kept download), with the name of the lock (or lock prefix) its writer holds while it lives."""
        for parent in (self.tmp_dir, self.downloads_dir) if downloads else (self.tmp_dir,):
            for work in parent.iterdir() if parent.is_dir() else ():
                yield work, work.name.split(".", 1)[0]
        for key_dir in self.root.glob("??/*"):
            if key_dir.is_dir() and _is_key(key_dir.name) and not self.record_path(key_dir.name).exists():
                yield key_dir, key_dir.name
        for record_tmp in self.root.glob("??/.*.json.*.tmp"):  # atomic_write's temp name of a record
            key = record_tmp.name[1:65]
            if _is_key(key):
                yield record_tmp, key

    @contextlib.contextmanager
    def _locks_if_free(self, key_or_prefix: str) -> Iterator[bool]:
        """Hold every lock of a key starting with ``key_or_prefix`` if none is held; yield whether we do."""
        lock_dir = self.root / "locks"
        with contextlib.ExitStack() as stack:
            locks = sorted(lock_dir.glob(f"{key_or_prefix}*.lock")) if lock_dir.is_dir() else []
            yield all(stack.enter_context(lock_if_free(lock)) for lock in locks)

    def garbage(self) -> Iterator[Path]:
        """What builds that are no longer running left behind (see :meth:`reclaim_garbage`)."""
        for path, lock_name in self._garbage_candidates(downloads=True):
            with self._locks_if_free(lock_name) as free:
                if free:
                    yield path

    def reclaim_garbage(self, *, dry_run: bool = False, downloads: bool = True) -> list[Garbage]:
        """Remove what builds that died left behind, each while holding its writer's lock; return it.
        ``downloads=False`` keeps partial downloads, which the next import resumes."""
        found: list[Garbage] = []
        for path, lock_name in self._garbage_candidates(downloads=downloads):
            with self._locks_if_free(lock_name) as free:
                if free and os.path.lexists(path):
                    found.append(Garbage(path, tree_size(path)))
                    if not dry_run:
                        remove_tree(path)
        return found

    def _reclaim_once(self) -> None:
        if self.root in _RECLAIMED:
            return
        _RECLAIMED.add(self.root)
        if not os.access(self.root, os.W_OK):  # a read-only store: nothing can be removed
            return
        if garbage := self.reclaim_garbage(downloads=False):
            log.step(f"store: removed {describe_garbage(garbage)}")

    def gc(self, *, keep_days: float = 0.0, dry_run: bool = False) -> list[str]:
        """Remove entries not in any roots file and older than ``keep_days``; return their keys."""
        roots = self.roots()
        cutoff = time.time() - keep_days * 86400
        removed = []
        for key in list(self.keys()):
            if key in roots or self.record_path(key).stat().st_mtime > cutoff:
                continue
            removed.append(key)
            if not dry_run:
                with self.lock(key):
                    self.remove(key)
        if not dry_run:
            self.reclaim_garbage()
        return removed
