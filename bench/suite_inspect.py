"""Inspection: ``diff`` against ``pcrs`` on both EIFs, ``extract --unpack`` against ``extract`` + GNU cpio.

Two EIFs (cached) of the goal's size: the pack benchmark's kernel and bootstrap ramdisk and an app
ramdisk written by ``eifbuild ramdisk --app`` from a tree of mostly 1 MiB files plus small ones;
the second EIF's tree has one small file changed, so ``diff`` must find that member (it exits 1:
the files differ). ``pcrs`` on both EIFs is the floor: a diff has to compute the same PCRs, and
then it also parses every ramdisk member and hashes its content. ``extract --unpack`` writes every
section and unpacks the app ramdisk; the alternative is ``extract`` followed by GNU ``cpio -idm``
of the extracted ramdisk. The output directories are removed (untimed) between runs.
"""

from __future__ import annotations

import os
import random
import shutil
from typing import TYPE_CHECKING, Final

from datagen import MTIME, warm
from harness import MIB, CommandFailed, Sample, interleaved, progress, run
from report import Row
from suite_pack import CMDLINE, inputs

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from options import Options

DIFF_GOAL: Final = 1.1
UNPACK_GOAL: Final = 1.2
SMALL_FILES: Final = 5_000
CHANGED: Final = "d000/small-00003"


def _tree(root: Path, mib: int, *, changed: bool) -> None:
    rng = random.Random(5)  # noqa: S311 - test data
    big = max(1, mib - 16)
    for i in range(big):
        d = root / f"d{i // 50:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"big-{i:04d}").write_bytes(rng.randbytes(MIB))
    for i in range(SMALL_FILES if mib >= 256 else 200):
        d = root / f"d{i % 20:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"small-{i:05d}").write_bytes(rng.randbytes(rng.choice((0, 100, 700, 2000, 6000))))
    (root / "bin").mkdir()
    (root / "bin" / "app").write_text("#!/bin/sh\necho app\n")
    if changed:
        with (root / CHANGED).open("ab") as fh:
            fh.write(b"changed\n")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (MTIME, MTIME))


def eifs(opts: Options, mib: int) -> tuple[Path, Path]:
    """Two cached EIFs whose app ramdisks differ in one small file."""
    folder = opts.data / "inspect" / f"{mib}m"
    done = folder / ".done"
    pair = (folder / "a.eif", folder / "b.eif")
    if done.exists():
        return pair
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    given = inputs(opts.data, mib)
    env = opts.env()
    for eif, changed in zip(pair, (False, True), strict=True):
        progress(f"inspect: writing {eif.name} ({mib} MiB)")
        tree = folder / "tree"
        _tree(tree, mib, changed=changed)
        ramdisk = folder / "app.cpio"
        cmd = ["--app", "--rootfs", str(tree), "--cmd", "/bin/app", "-o", str(ramdisk)]
        run([opts.python, "-m", "eifbuild", "ramdisk", *cmd], env=env)
        pack = ["--kernel", str(given.kernel), "--cmdline", CMDLINE, "--ramdisk", str(given.ramdisks[0])]
        pack += ["--ramdisk", str(ramdisk), "--output", str(eif), "--name", "inspect", "--version", "1"]
        run([opts.python, "-m", "eifbuild", "pack", *pack], env=env)
        shutil.rmtree(tree)
        ramdisk.unlink()
    done.touch()
    return pair


def rows(opts: Options) -> list[Row]:
    mib = opts.pack_ratio_size
    a, b = eifs(opts, mib)
    work = opts.work / "inspect"
    work.mkdir(parents=True)
    env = opts.env()
    eifbuild = [opts.python, "-m", "eifbuild"]

    def pcrs() -> Sample:
        script = '"$0" -m eifbuild pcrs "$1" >/dev/null && "$0" -m eifbuild pcrs "$2" >/dev/null'
        return run(["sh", "-c", script, opts.python, str(a), str(b)], env=env)

    def diff() -> Sample:
        script = '"$0" -m eifbuild diff "$1" "$2"; test $? -eq 1'  # 1: they differ
        sample = run(["sh", "-c", script, opts.python, str(a), str(b)], env=env, capture=True)
        if f"rootfs/{CHANGED}" not in sample.stdout:
            msg = f"diff did not name the changed member rootfs/{CHANGED}:\n{sample.stdout[-2000:]}"
            raise CommandFailed(msg)
        return sample

    def unpack() -> Sample:
        return run([*eifbuild, "extract", "--unpack", "-o", str(work / "unpacked"), str(a)], env=env)

    def extract_cpio() -> Sample:
        script = '"$0" -m eifbuild extract -o "$1" "$2" >/dev/null && mkdir "$1/tree" && cd "$1/tree"'
        script += " && cpio -idm --quiet < ../ramdisk-1.cpio"
        return run(["sh", "-c", script, opts.python, str(work / "cpio"), str(a)], env=env)

    def between() -> None:
        for name in ("unpacked", "cpio"):
            shutil.rmtree(work / name, ignore_errors=True)
        os.sync()
        warm(a, b)

    commands: list[tuple[str, Callable[[], Sample]]] = [
        ("eifbuild pcrs, both EIFs", pcrs),
        ("eifbuild diff", diff),
        ("eifbuild extract + GNU cpio -idm", extract_cpio),
        ("eifbuild extract --unpack", unpack),
    ]
    progress(f"inspect {mib} MiB: {', '.join(label for label, _ in commands)}, {opts.repeat} runs each")
    series = interleaved(opts.repeat, commands, between=between)
    shutil.rmtree(work, ignore_errors=True)
    floor, ours, alternative, unpacked = series.values()
    group = f"inspect {mib} MiB"
    return [
        Row(group, floor),
        Row(
            group,
            ours,
            baseline=floor,
            goal=f"≤ {DIFF_GOAL}x pcrs",
            met=ours.median / floor.median <= DIFF_GOAL,
        ),
        Row(group, alternative),
        Row(
            group,
            unpacked,
            baseline=alternative,
            goal=f"≤ {UNPACK_GOAL}x extract + cpio",
            met=unpacked.median / alternative.median <= UNPACK_GOAL,
        ),
    ]
