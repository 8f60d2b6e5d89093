"""The build's EIF step: ``doit eif`` with only ``eif:x86_64`` out of date, against ``sha384sum``.

The project's app rootfs holds one file, a hard link to the pack benchmark's app input (so the app
ramdisk is about the goal's size); the first build (untimed) makes both ramdisks. Before every
measured run the cmdline in eif.toml changes, which moves only the EIF step's key: each run must
rerun exactly ``eif:x86_64``, which packs (the same code as ``eifbuild pack``), lets the store hash
the new EIF (sha256) and writes the provenance (the EIF's sha384). The baseline is ``sha384sum`` of
the EIF the first build wrote (the same number of bytes). Each run's store entry is removed
untimed afterwards, so every run writes a new 1 GiB EIF and the disk does not fill up.
"""

from __future__ import annotations

import os
import shutil
import textwrap
from typing import TYPE_CHECKING, Final

from datagen import warm
from harness import CommandFailed, Sample, interleaved, progress, run
from report import Row
from suite_pack import inputs

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from options import Options

EIF_TOML: Final = """\
    [eif]
    name = "eifstep"
    version = "0.1.0"
    arch = ["x86_64"]
    build_time = "2024-01-01T00:00:00+00:00"
    cmdline = "console=ttyS0 run={run}"

    [bootstrap]
    kernel = {{ path = "kernel.bin" }}
    init = {{ path = "init.bin" }}
    nsm = "none"

    [app]
    rootfs = "rootfs"
    cmd = ["/bin/app"]
"""
DODO: Final = "from eifbuild.tasks import *  # noqa: F403\n"
EIF_TASK: Final = "eif:x86_64"


def _ran(sample: Sample) -> set[str]:
    return {line[3:].strip() for line in sample.stdout.splitlines() if line.startswith(".  ")}


def make_project(opts: Options, root: Path, mib: int) -> Path:
    given = inputs(opts.data, mib)
    root.mkdir(parents=True)
    (root / "dodo.py").write_text(DODO)
    os.link(given.kernel, root / "kernel.bin")
    (root / "init.bin").write_bytes(b"\x7fELF stand-in init\n" * 100)
    (root / "rootfs" / "bin").mkdir(parents=True)
    (root / "rootfs" / "bin" / "app").write_text("#!/bin/sh\necho app\n")
    (root / "rootfs" / "bin" / "app").chmod(0o755)
    os.link(given.ramdisks[1], root / "rootfs" / "app.bin")
    return root


def rows(opts: Options) -> list[Row]:
    mib = opts.pack_ratio_size
    project = make_project(opts, opts.work / "eifstep", mib)
    store = opts.work / "eifstep-store"
    env = opts.env({"EIFBUILD_CACHE": str(store)})
    counter = iter(range(1_000_000))

    def configure() -> None:
        (project / "eif.toml").write_text(textwrap.dedent(EIF_TOML.format(run=next(counter))))

    def build() -> Sample:
        return run([opts.python, "-m", "doit", "eif"], cwd=project, env=env, capture=True)

    progress(f"EIF step: first build of a project with a {mib} MiB app rootfs")
    configure()
    first = build()
    eif = next((project / "build").rglob("*.eif"))
    keep = _entries(store)
    baseline_file = opts.work / "eifstep-first.eif"
    shutil.copyfile(eif, baseline_file)

    def sha() -> Sample:
        return run(["sha384sum", str(baseline_file)])

    def step() -> Sample:
        configure()
        sample = build()
        if (ran := _ran(sample)) != {EIF_TASK}:
            msg = f"the EIF step ran {sorted(ran)}, not only {EIF_TASK}"
            raise CommandFailed(msg)
        return sample

    def between() -> None:
        _drop_new_entries(store, keep)
        os.sync()
        warm(baseline_file, project / "rootfs", project / "kernel.bin")

    commands: list[tuple[str, Callable[[], Sample]]] = [
        ("sha384sum of the EIF", sha),
        ("doit eif, only the EIF step", step),
    ]
    progress(f"EIF step: {opts.repeat} runs each of {', '.join(label for label, _ in commands)}")
    series = interleaved(opts.repeat, commands, between=between)
    shutil.rmtree(project, ignore_errors=True)
    shutil.rmtree(store, ignore_errors=True)
    group = f"EIF step, {mib} MiB"
    base, ours = series.values()
    note = f"ran: {EIF_TASK}; first build ran: {', '.join(sorted(_ran(first)))}"
    return [Row(group, base), Row(group, ours, baseline=base, note=note)]


def _entries(store: Path) -> set[Path]:
    """The store's entries: ``<2 hex>/<key>`` directories, each with ``<key>.json`` beside it."""
    return {p for p in store.glob("??/*") if p.is_dir() and len(p.name) == 64}


def _drop_new_entries(store: Path, keep: set[Path]) -> None:
    """Remove the entries made since the first build (read-only trees) and their records."""
    for entry in _entries(store) - keep:
        for dirpath, _, _ in os.walk(entry):
            os.chmod(dirpath, 0o755)  # noqa: S103 - store entries are read-only
        shutil.rmtree(entry, ignore_errors=True)
        entry.with_name(entry.name + ".json").unlink(missing_ok=True)
