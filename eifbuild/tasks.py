"""doit tasks for the eif.toml next to dodo.py: ``doit eif`` (default), ``doit check``, ``doit list``.

An app repo's ``dodo.py`` is two lines::

    # Tasks for ./eif.toml: doit eif | doit check | doit list | doit clean
    from eifbuild.tasks import *  # noqa: F403

doit runs dodo.py from its own directory, so the project is ``./eif.toml`` (``$EIFBUILD_CONFIG``
names another file). Each node of the build plan (:mod:`eifbuild.plan`) becomes one task whose
up-to-date check asks the store, never a file timestamp: a no-op run computes keys and stats files.
doit's own dependency file (sqlite3) lives in the store directory (in a temp dir while the store
cannot be written).

A remote cache (eif.toml's ``[cache]`` or ``$EIFBUILD_REMOTE_CACHE``) is attached to the plan's
store: steps the store lacks are pulled from it when a trusted key signed them, and with
``$EIFBUILD_REMOTE_CACHE_PUSH=1`` every step built here is pushed. ``$EIFBUILD_REQUIRE_REMOTE=1``
turns a remote failure or miss into an error (doit takes no options of ours, hence variables).

Ctrl-C prints one line, ``error: interrupted``, and exits 130, as the eifbuild CLI does; the temp
files of the interrupted step are gone by then (see :func:`_exit_130_on_interrupt`).

``$EIFBUILD_TEST_INJECT_TIME`` is a documented test hook: ``doit check`` must notice a step that is
not deterministic. When set, the app ramdisk gains this file holding the current time (and its key
a nonce, so it is rebuilt).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from doit.exceptions import InvalidDodoFile, TaskError, TaskFailed

from . import log
from .errors import EifbuildError, ToolError
from .plan import (
    CONFIG_NAME,
    FAILURE_FILE_ENV,
    CompileNode,
    EifNode,
    FileDigests,
    OciNode,
    Plan,
    RamdiskNode,
    SourceNode,
    load_project,
)
from .store import Store
from .store.remote import with_environment

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from types import TracebackType

    from .plan import Node
    from .store.remote import RemoteCache

__all__ = ["DOIT_CONFIG", "task_check", "task_compile", "task_eif", "task_fetch", "task_ramdisk"]

CONFIG_ENV = "EIFBUILD_CONFIG"
INJECT_TIME_ENV = "EIFBUILD_TEST_INJECT_TIME"
EXIT_INTERRUPTED: Final = 130


def _exit_130_on_interrupt() -> None:
    """Make an uncaught KeyboardInterrupt one line and exit 130 instead of doit's ~80-line traceback.

    doit catches only ``Exception``, so Ctrl-C wherever it strikes (a step, an up-to-date check,
    doit's own code) unwinds to the interpreter's top, running every ``finally`` on the way: the
    store's temp dirs and half-written outputs are removed before this hook runs.
    """
    previous = sys.excepthook

    def hook(kind: type[BaseException], value: BaseException, tb: TracebackType | None) -> None:
        if not issubclass(kind, KeyboardInterrupt):
            previous(kind, value, tb)
            return
        for stream in (sys.__stdout__, sys.__stderr__):
            if stream is not None:
                stream.flush()
        print("error: interrupted", file=sys.__stderr__, flush=True)
        os._exit(EXIT_INTERRUPTED)  # a plain exit would make the interpreter re-raise SIGINT

    sys.excepthook = hook


def _config_path() -> Path:
    return Path(os.environ.get(CONFIG_ENV, CONFIG_NAME)).absolute()


def _dep_file(store: Store, config: Path) -> Path:
    """doit's database, in the store; a store that cannot be written (a read-only mount of a
    shared cache) gets a throw-away one instead: every up-to-date check asks the store, not it."""
    dep_file = store.root / "doit" / f"{FileDigests.path_id(config)}.sqlite3"
    with contextlib.suppress(OSError):
        dep_file.parent.mkdir(parents=True, exist_ok=True)
    if os.access(dep_file.parent, os.W_OK) and (not dep_file.exists() or os.access(dep_file, os.W_OK)):
        return dep_file
    scratch = Path(tempfile.mkdtemp(prefix="eifbuild-doit."))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    return scratch / dep_file.name


def _doit_config() -> dict[str, Any]:
    config = _config_path()
    return {
        "default_tasks": ["eif"],
        "backend": "sqlite3",
        "dep_file": str(_dep_file(Store.for_project(config.parent), config)),
        "verbosity": 2,
        "action_string_formatting": "new",
    }


DOIT_CONFIG = _doit_config()
_exit_130_on_interrupt()


@functools.cache
def _plan() -> Plan:
    try:
        plan = Plan(load_project(_config_path()), inject_time=os.environ.get(INJECT_TIME_ENV))
        _attach_remote(plan)
    except EifbuildError as exc:
        raise InvalidDodoFile(str(exc)) from None
    return plan


def _attach_remote(plan: Plan) -> None:
    """Pull from (and maybe push to) the remote cache; boto3 is imported only when one is set."""
    settings = with_environment(plan.project.cache)  # $EIFBUILD_REMOTE_CACHE and the others
    if not settings.enabled:
        return
    from .store import remote  # noqa: PLC0415

    cache = remote.attach(plan.store, settings)
    if cache is not None:
        atexit.register(_summary, cache)


def _summary(cache: RemoteCache) -> None:
    moved = cache.transfers
    if moved.pulled or moved.pushed or moved.refused:
        with log.use(log.StderrReporter()):
            log.step(moved.summary(cache.url))


def _reporting(action: Callable[[], str | None]) -> Callable[[], TaskFailed | None]:
    """Run ``action`` with eifbuild's reporter; an EifbuildError becomes one clear failure line."""

    def run() -> TaskFailed | None:
        with log.use(log.StderrReporter()):
            try:
                text = action()
            except EifbuildError as exc:
                _record_failure(exc)
                return TaskFailed(f"error: {exc}")
        if text:
            print(text, flush=True)
        return None

    return run


def _record_failure(exc: EifbuildError) -> None:
    """Tell a ``doit check`` that runs this build what kind of error stopped it."""
    path = os.environ.get(FAILURE_FILE_ENV)
    if path:
        Path(path).write_text(f"{type(exc).__name__} {exc}")


def _task(plan: Plan, node: Node[Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": node.task.split(":", 1)[1],
        "doc": node.doc,
        "actions": [_reporting(lambda: _build(plan, node))],
        "uptodate": [node.current],
        "task_dep": [dep.task for dep in node.deps if dep.task] + _images_first(plan, node),
        **extra,
    }


def _images_first(plan: Plan, node: Node[Any]) -> list[str]:
    """For a compile: every image of the plan, so that a bad image (a wrong platform, a missing
    digest) is reported before zig's first build of musl, which takes a minute per arch."""
    if not isinstance(node, CompileNode):
        return []
    return [other.task for other in plan.nodes() if isinstance(other, OciNode)]


def _build(plan: Plan, node: Node[Any]) -> str | None:
    plan.build(node)
    return node.summary() if isinstance(node, EifNode) else None


def _tasks(kinds: tuple[type, ...]) -> Iterator[dict[str, Any]]:
    plan = _plan()
    found = False
    for node in plan.nodes():
        if isinstance(node, kinds):
            found = True
            yield _task(plan, node)
    if not found:  # doit wants every task_* to define something
        yield {"name": None, "doc": "nothing to do for this project", "actions": None}


def task_fetch() -> Iterator[dict[str, Any]]:
    """fetch and verify the pinned sources and OCI images"""
    yield from _tasks((SourceNode, OciNode))


def task_compile() -> Iterator[dict[str, Any]]:
    """compile init and app programs with zig"""
    yield from _tasks((CompileNode,))


def task_ramdisk() -> Iterator[dict[str, Any]]:
    """pack the bootstrap and app ramdisks"""
    yield from _tasks((RamdiskNode,))


def task_eif() -> Iterator[dict[str, Any]]:
    """build the EIFs and their PCRs (every arch of eif.toml)"""
    plan = _plan()
    for node in plan.eifs.values():
        yield _task(plan, node, targets=[str(t) for t in node.targets()], clean=True)


def task_check() -> dict[str, Any]:
    """rebuild everything elsewhere (fresh store, other path, umask, TZ, LANG) and compare"""
    plan = _plan()

    def check() -> TaskFailed | TaskError | None:
        # doit loads every task on every run: only running `doit check` imports the self-check
        from .plan import self_check  # noqa: PLC0415

        with log.use(log.StderrReporter()):
            try:
                report = self_check(plan)
            except ToolError as exc:  # the copy does not build: a finding
                return TaskFailed(f"error: {exc}")
            except EifbuildError as exc:  # the check cannot run: doit's exit code 2, not 1
                return TaskError(f"error: {exc}")
        print(report.text, flush=True)
        return None if report.ok else TaskFailed("not reproducible: see the differences above")

    return {
        "actions": [check],
        "task_dep": ["eif"],
        "uptodate": [False],
        "verbosity": 2,
    }
