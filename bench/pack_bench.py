"""Time `write_eif` against a plain copy of the same inputs (the I/O floor); print the ratio.

    python bench/pack_bench.py [--mib 512] [--repeat 5] [--algo sha384] [--dir DIR]

Packs an 8 MiB kernel and two random ramdisks (4 MiB bootstrap, the rest app; --mib MiB in all)
into an EIF in --dir, and copies the same files into one file there, alternating the two, --repeat
times each after an untimed warm-up. Prints the best and median wall time, the throughput and the
CPU time of each, and the wall-time ratio. Nothing is asserted (machines differ).

What packing adds to the copy is hashing: the kernel and bootstrap ramdisk once (PCR0, with PCR1
forked from it), the app ramdisk twice (PCR0 and PCR2), and a CRC-32 of everything.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from eifbuild import eif
from eifbuild.metadata import EifMetadata


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _pack(workdir: Path, ramdisks: list[Path], algo: str) -> None:
    eif.write_eif(
        workdir / "bench.eif",
        kernel=workdir / "kernel",
        cmdline="console=ttyS0",
        ramdisks=ramdisks,
        metadata=EifMetadata("bench", "1", "1970-01-01T00:00:00+00:00"),
        arch="x86_64",
        algo=algo,  # type: ignore[arg-type]
    )


def _copy(workdir: Path, ramdisks: list[Path], _algo: str) -> None:
    with (workdir / "copy.bin").open("wb") as out:
        for path in (workdir / "kernel", *ramdisks):
            with path.open("rb") as fh:
                shutil.copyfileobj(fh, out, 1 << 20)


Run = Callable[[Path, list[Path], str], None]


def _timed(run: Run, workdir: Path, ramdisks: list[Path], algo: str) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), _cpu()
    run(workdir, ramdisks, algo)
    return time.perf_counter() - wall, _cpu() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--algo", default="sha384", choices=["sha256", "sha384", "sha512"])
    parser.add_argument("--dir", type=Path, default=None)
    args = parser.parse_args()
    modes: dict[str, Run] = {"copy": _copy, "pack": _pack}
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in modes}
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        workdir = Path(tmp)
        (workdir / "kernel").write_bytes(os.urandom(8 << 20))
        ramdisks = [workdir / "bootstrap", workdir / "app"]
        ramdisks[0].write_bytes(os.urandom(4 << 20))
        with ramdisks[1].open("wb") as fh:
            for _ in range(max(args.mib - 12, 1)):
                fh.write(os.urandom(1 << 20))
        for run in modes.values():
            run(workdir, ramdisks, args.algo)  # warm the page cache
        for _ in range(args.repeat):
            for name, run in modes.items():
                results[name].append(_timed(run, workdir, ramdisks, args.algo))
    total = max(args.mib, 13)
    for name, runs in results.items():
        walls = [wall for wall, _ in runs]
        print(
            f"{name}: best {min(walls):.2f}s ({total / min(walls):.0f} MiB/s), "
            f"median {statistics.median(walls):.2f}s, CPU {min(cpu for _, cpu in runs):.2f}s"
        )
    ratio = min(w for w, _ in results["pack"]) / min(w for w, _ in results["copy"])
    print(f"pack / copy wall time (best of {args.repeat}): {ratio:.2f}")


if __name__ == "__main__":
    main()
