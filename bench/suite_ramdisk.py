"""Ramdisk: ``eifbuild ramdisk`` against GNU cpio on the same normalised tree (same output bytes).

The tree (generated once: mostly small files, symlinks, a few hard links, normalised modes, every
mtime the same) is archived by eifbuild's writer and by the pipeline its bytes are defined by::

    find . -mindepth 1 -printf '%P\\0' | LC_ALL=C sort -z | cpio -o -H newc -R +0:+0 --reproducible --null

Both write into the scratch directory (``os.sync`` and a read of the whole tree run untimed before
every command, so each finds the tree in the page cache); afterwards the archives must be
byte-identical. Two reference rows: the same walk and writer called as a library (what ``doit eif``
runs, in-process) and the CLI's start-up alone (``eifbuild --version``).
"""

from __future__ import annotations

import filecmp
import os
import shutil
from typing import TYPE_CHECKING, Final

from datagen import MTIME, cached_tree, warm
from harness import CommandFailed, Sample, interleaved, progress, run
from report import Row

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from options import Options

GNU: Final = (
    "find . -mindepth 1 -printf '%P\\0' | LC_ALL=C sort -z"
    ' | cpio -o -H newc -R +0:+0 --reproducible --null --quiet > "$OUT"'
)
RATIO_GOAL: Final = 1.0
# What `doit eif` runs in-process: the walk and the writer, without the CLI's start-up.
LIBRARY: Final = (
    "from eifbuild.ramdisk import tree_entries, write_cpio_file; "
    "write_cpio_file(tree_entries({tree!r}), {out!r}, mtime={mtime})"
)


def rows(opts: Options) -> list[Row]:
    if shutil.which("cpio") is None:
        msg = "GNU cpio is not installed (apt-get install cpio)"
        raise CommandFailed(msg)
    tree = cached_tree(opts.data / f"tree-{opts.tree_files}", opts.tree_files)
    work = opts.work / "ramdisk"
    work.mkdir(parents=True, exist_ok=True)
    gnu_out, our_out = work / "gnu.cpio", work / "eifbuild.cpio"

    def gnu() -> Sample:
        cmd = ["bash", "-o", "pipefail", "-c", GNU]
        return run(cmd, cwd=tree, env=opts.env({"OUT": str(gnu_out)}))

    def ours(python: str, out: Path) -> Callable[[], Sample]:
        cmd = [python, "-m", "eifbuild", "ramdisk", str(tree), "-o", str(out), "--mtime", str(MTIME)]
        return lambda: run(cmd, cwd=work, env=opts.env())

    def library() -> Sample:
        code = LIBRARY.format(tree=str(tree), out=str(work / "library.cpio"), mtime=MTIME)
        return run([opts.python, "-c", code], cwd=work, env=opts.env())

    def startup() -> Sample:
        return run([opts.python, "-m", "eifbuild", "--version"], cwd=work, env=opts.env())

    commands = [
        ("GNU cpio (find|sort|cpio)", gnu),
        ("eifbuild ramdisk", ours(opts.python, our_out)),
        ("library: write_cpio_file", library),
        ("eifbuild --version", startup),
    ]
    if opts.before is not None:
        commands.append(("eifbuild ramdisk (before)", ours(opts.before, work / "before.cpio")))
    progress(f"ramdisk {opts.tree_files} files: {', '.join(c for c, _ in commands)}, {opts.repeat} runs each")

    def between() -> None:
        os.sync()
        warm(tree)

    series = interleaved(opts.repeat, commands, between=between)
    for out in work.glob("*.cpio"):
        if not filecmp.cmp(gnu_out, out, shallow=False):
            msg = f"the archives differ: {gnu_out} {out}"
            raise CommandFailed(msg)
    size = our_out.stat().st_size
    shutil.rmtree(work)
    base, mine, *others = series.values()
    group = f"ramdisk {opts.tree_files} files"
    extra = [Row(group, s, baseline=base) for s in others]
    return [
        Row(group, base, note=f"{size / 2**20:.0f} MiB archive"),
        Row(
            group,
            mine,
            baseline=base,
            goal=f"≤ {RATIO_GOAL}x GNU cpio",
            met=mine.median / base.median <= RATIO_GOAL,
            note="byte-identical",
        ),
        *extra,
    ]
