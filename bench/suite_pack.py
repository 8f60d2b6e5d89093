"""Pack: ``eifbuild pack`` against ``sha384sum`` over the same bytes (every byte must be SHA-384'd).

The inputs are an 8 MiB stand-in kernel, a 4 MiB bootstrap ramdisk and an app ramdisk holding the
rest of the size; ``sha384sum`` reads the three files, ``eifbuild pack`` reads them, hashes them
into PCR0/1/2 (the app ramdisk twice: PCR0 and PCR2), CRCs them and writes the EIF. ``eif_build``
(AWS's tool) is another row when it is on PATH. Two reference rows: ``openssl dgst -sha384``
(OpenSSL's SHA-384, which eifbuild uses through hashlib, is faster than coreutils') and ``cat``
of the inputs into a new file (the same reads and writes without hashing: the I/O floor). ``os.sync``
runs untimed after every command, so one run's writeback does not slow the next, and the inputs
are read into the page cache again (untimed) before every command.

``eifbuild pack`` writes a new file each run (the previous run's output is removed untimed), as the
build's EIF step does (it writes into a new store directory); a second row packs over the EIF of
its previous run, which then holds its page-cache pages until the rename (see BENCHMARKS.md: on
this VM new pages cost more than the hashing). At the goal's size, one more group measures the
build's EIF step itself: ``doit eif`` in a project whose app rootfs holds the app input, with only
``eif:x86_64`` out of date (its cmdline changes before every run), against ``sha384sum`` of that
EIF: the step packs, then the store hashes the EIF (sha256) and the provenance needs its sha384.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from datagen import random_file, warm
from harness import MIB, Sample, Series, interleaved, progress, run
from report import Row

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from options import Options

KERNEL_MIB: Final = 8
BOOTSTRAP_MIB: Final = 4
CMDLINE: Final = "console=ttyS0 reboot=k panic=30 pci=off nomodules"
RATIO_GOAL: Final = 0.9
RSS_GOAL: Final = 64 * MIB
RATIO_SIZE_MIB: Final = 1024  # the size the time goal is about


@dataclass(frozen=True)
class PackInputs:
    kernel: Path
    ramdisks: tuple[Path, Path]

    def files(self) -> list[Path]:
        return [self.kernel, *self.ramdisks]


def inputs(data: Path, mib: int) -> PackInputs:
    """Cached inputs for ``mib`` MiB of ramdisk data."""
    kernel = random_file(data / "pack" / "kernel", KERNEL_MIB * MIB, seed=1)
    bootstrap = random_file(data / "pack" / "bootstrap", BOOTSTRAP_MIB * MIB, seed=2)
    app = random_file(data / "pack" / f"app-{mib}m", (mib - BOOTSTRAP_MIB) * MIB, seed=3)
    return PackInputs(kernel, (bootstrap, app))


def _eifbuild_cmd(python: str, given: PackInputs, out: Path, config: Path | None) -> list[str]:
    cmd = [python, "-m", "eifbuild", "pack", "--kernel", str(given.kernel), "--cmdline", CMDLINE]
    if config is not None:
        cmd += ["--kernel_config", str(config)]
    for ramdisk in given.ramdisks:
        cmd += ["--ramdisk", str(ramdisk)]
    return [*cmd, "--output", str(out), "--name", "bench", "--version", "1.0"]


def _eif_build_cmd(tool: str, given: PackInputs, out: Path, config: Path | None) -> list[str]:
    cmd = [tool, "--kernel", str(given.kernel), "--cmdline", CMDLINE]
    if config is not None:
        cmd += ["--kernel_config", str(config)]
    for ramdisk in given.ramdisks:
        cmd += ["--ramdisk", str(ramdisk)]
    return [*cmd, "--output", str(out)]


def measure_size(opts: Options, mib: int) -> dict[str, Series]:
    given = inputs(opts.data, mib)
    work = opts.work / f"pack-{mib}"
    work.mkdir(parents=True, exist_ok=True)
    config = opts.kernel_config

    def sha() -> Sample:
        return run(["sha384sum", *map(str, given.files())])

    def pack(python: str, name: str) -> Callable[[], Sample]:
        cmd = _eifbuild_cmd(python, given, work / name, config)
        return lambda: run(cmd, cwd=work, env=opts.env())

    commands: list[tuple[str, Callable[[], Sample]]] = [
        ("sha384sum", sha),
        ("eifbuild pack", pack(opts.python, "new.eif")),
        ("eifbuild pack over its last EIF", pack(opts.python, "over.eif")),
    ]
    if opts.before is not None:
        commands.append(("eifbuild pack (before)", pack(opts.before, "new-before.eif")))

    def cat() -> Sample:
        # The same reads and writes without hashing, into a new file renamed into place as
        # eifbuild's atomic write does (the last one is removed untimed, as for ``eifbuild pack``).
        script = 'cat "$@" > "$0.tmp" && mv "$0.tmp" "$0"'
        return run(["sh", "-c", script, str(work / "cat.out"), *map(str, given.files())], env=opts.env())

    commands.append(("cat inputs > new file", cat))

    openssl = shutil.which("openssl")
    if openssl is not None:

        def dgst() -> Sample:  # the SHA-384 eifbuild uses (hashlib is OpenSSL's)
            return run([openssl, "dgst", "-sha384", *map(str, given.files())])

        commands.append(("openssl dgst -sha384", dgst))
    tool = shutil.which("eif_build")
    if tool is not None:

        def theirs() -> Sample:
            return run(_eif_build_cmd(tool, given, work / "eif_build.eif", config))

        commands.append(("eif_build", theirs))
    progress(f"pack {mib} MiB: {', '.join(label for label, _ in commands)}, {opts.repeat} runs each")

    def between() -> None:
        for name in ("new.eif", "new-before.eif", "cat.out"):
            (work / name).unlink(missing_ok=True)  # the next run writes a new file
        os.sync()
        warm(*given.files())

    series = interleaved(opts.repeat, commands, between=between)
    shutil.rmtree(work)
    return series


def rows(opts: Options) -> list[Row]:
    found: list[Row] = []
    if shutil.which("eif_build") is None:
        progress("pack: eif_build is not on PATH, skipping that column")
    for mib in opts.pack_sizes:
        series = measure_size(opts, mib)
        base = series["sha384sum"]
        group = f"pack {mib} MiB"
        timed = mib == opts.pack_ratio_size
        found.append(Row(group, base))
        ours = series["eifbuild pack"]
        found.append(
            Row(
                group,
                ours,
                baseline=base,
                goal=f"≤ {RATIO_GOAL}x sha384sum" if timed else "",
                met=ours.median / base.median <= RATIO_GOAL if timed else None,
                rss_goal=RSS_GOAL,
            )
        )
        for label in ("eifbuild pack over its last EIF", "eifbuild pack (before)", "eif_build"):
            if label in series:
                found.append(Row(group, series[label], baseline=base, rss_goal=RSS_GOAL))
        found += [
            Row(group, series[x], baseline=base)
            for x in ("openssl dgst -sha384", "cat inputs > new file")
            if x in series
        ]
    return found
