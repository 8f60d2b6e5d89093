"""No-op rebuild: ``doit eif`` on a project whose rootfs has 50,000 files, when nothing changed.

The project (made like tests/plan/test_dag.py makes one: eif.toml, the two-line dodo.py, stand-in kernel
and init given by ``{ path = ... }``, a generated rootfs of small files) is built once, then
``python -m doit eif`` runs again and again: every run must skip every task. Three reference rows
show the floor under it: the interpreter starting (``python -c pass``), doit with a dodo.py whose
one task is up to date (interpreter + doit), and GNU find printing the stat fields of every rootfs
entry (the system calls a no-op cannot avoid, made from C). Then one rootfs file is changed before each of
the next runs, which must rerun exactly the app ramdisk and the EIF.
"""

from __future__ import annotations

import os
import random
import textwrap
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from datagen import SMALL_SIZES, make_tree
from harness import CommandFailed, Sample, Series, interleaved, progress, run
from report import Row

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from options import Options

GOAL_SECONDS: Final = 0.2
EIF_TOML: Final = """\
    [eif]
    name = "noop"
    version = "0.1.0"
    arch = ["x86_64"]
    build_time = "2024-01-01T00:00:00+00:00"
    cmdline = "console=ttyS0"

    [bootstrap]
    kernel = { path = "kernel.bin" }
    init = { path = "init.bin" }
    nsm = "none"

    [app]
    rootfs = "rootfs"
    cmd = ["/bin/app"]
"""
DODO: Final = "from eifbuild.tasks import *  # noqa: F403\n"
EMPTY_DODO: Final = """\
    def task_noop():
        return {"actions": ["true"], "uptodate": [True]}
"""
APP_TASKS: Final = frozenset({"ramdisk:app:x86_64", "eif:x86_64"})
STAT_FORMAT: Final = "%y%m %s %T@ %C@ %i %D %P\\0"  # what the fingerprint covers, formatted by find


def make_project(root: Path, files: int) -> Path:
    root.mkdir(parents=True)
    (root / "eif.toml").write_text(textwrap.dedent(EIF_TOML))
    (root / "dodo.py").write_text(DODO)
    rng = random.Random(7)  # noqa: S311 - test data
    (root / "kernel.bin").write_bytes(rng.randbytes(1 << 20))
    (root / "init.bin").write_bytes(rng.randbytes(9000))
    rootfs = root / "rootfs"
    rootfs.mkdir()
    progress(f"no-op: generating a {files}-file rootfs")
    make_tree(rootfs, files - 1, sizes=SMALL_SIZES, big_every=0)
    (rootfs / "bin").mkdir()
    (rootfs / "bin" / "app").write_text("#!/bin/sh\necho app\n")
    (rootfs / "bin" / "app").chmod(0o755)
    return root


def _ran(sample: Sample) -> set[str]:
    return {line[3:].strip() for line in sample.stdout.splitlines() if line.startswith(".  ")}


def rows(opts: Options) -> list[Row]:
    group = f"no-op, {opts.noop_files} files"
    floor = opts.work / "floor"
    floor.mkdir()
    (floor / "dodo.py").write_text(textwrap.dedent(EMPTY_DODO))
    env = opts.env()
    versions = {"": opts.python} if opts.before is None else {"": opts.python, " (before)": opts.before}
    builds: dict[str, Build] = {}
    found: list[Row] = []
    for i, (suffix, interpreter) in enumerate(versions.items()):
        builds[suffix] = Build(interpreter, make_project(opts.work / f"noop-{i}", opts.noop_files), env)
        progress(f"no-op: first build{suffix}")
        first = Series(f"doit eif, first build{suffix}", [builds[suffix]()])
        found.append(Row(group, first, note=f"ran: {', '.join(sorted(_ran(first.samples[0])))}"))

    def bare_python() -> Sample:
        return run([opts.python, "-c", "pass"], env=env)

    def doit_floor() -> Sample:
        return run([opts.python, "-m", "doit"], cwd=floor, env=env)

    rootfs = builds[""].project / "rootfs"

    def stat_floor() -> Sample:
        return run(["find", str(rootfs), "-printf", STAT_FORMAT], env=env)

    commands: list[tuple[str, Callable[[], Sample]]] = [
        ("python -c pass", bare_python),
        ("doit, one up-to-date task", doit_floor),
        ("find: lstat every rootfs entry (C)", stat_floor),
    ]
    commands += [(f"doit eif (no-op){suffix}", _noop(build)) for suffix, build in builds.items()]
    progress(f"no-op: {opts.repeat} runs each of {', '.join(label for label, _ in commands)}")
    series = list(interleaved(opts.repeat, commands).values())
    start, floor_series, stats, mine, *before = series
    rows = [
        Row(group, start),
        Row(group, floor_series),
        Row(group, stats),
        Row(
            group,
            mine,
            baseline=floor_series,
            goal=f"≤ {GOAL_SECONDS} s",
            met=mine.median <= GOAL_SECONDS,
            note="ran: nothing",
        ),
        *(Row(group, s, baseline=floor_series, note="ran: nothing") for s in before),
    ]
    for suffix, build in builds.items():
        rows.append(_changed_runs(opts, suffix, build))
    return rows + found


@dataclass(frozen=True)
class Build:
    """``doit eif`` in one project with one interpreter."""

    python: str
    project: Path
    env: dict[str, str]

    def __call__(self) -> Sample:
        return run([self.python, "-m", "doit", "eif"], cwd=self.project, env=self.env, capture=True)


def _noop(build: Build) -> Callable[[], Sample]:
    def noop() -> Sample:
        sample = build()
        if ran := _ran(sample):
            msg = f"a no-op `doit eif` ran tasks: {', '.join(sorted(ran))}"
            raise CommandFailed(msg)
        return sample

    return noop


def _changed_runs(opts: Options, suffix: str, build: Build) -> Row:
    """One rootfs file changed before each run; every run must rerun just the app ramdisk and EIF."""
    files = sorted((build.project / "rootfs").glob("d000/s00/file-*.dat"))
    series = Series(f"doit eif, 1 rootfs file changed{suffix}")
    progress(f"no-op: {opts.repeat} runs with one file changed{suffix}")
    for i in range(opts.repeat):
        with files[i].open("ab") as fh:
            fh.write(b"changed\n")
        sample = build()
        if (ran := _ran(sample)) != APP_TASKS:
            msg = f"after changing {files[i].name}, `doit eif` ran {sorted(ran)}, not {sorted(APP_TASKS)}"
            raise CommandFailed(msg)
        series.samples.append(sample)
    os.sync()
    return Row(f"no-op, {opts.noop_files} files", series, note=f"ran: {', '.join(sorted(APP_TASKS))}")
