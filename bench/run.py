"""Measure eifbuild's speed goals against their limits and alternatives, in one run; print a table.

    python3 bench/run.py                 # everything (about an hour; inputs cached between runs)
    python3 bench/run.py --quick         # small sizes, one run each: a smoke test (CI)
    python3 bench/run.py --only noop --repeat 9 --markdown

Benchmarks (see BENCHMARKS.md for the goals and the figures):

- pack: ``eifbuild pack`` vs ``sha384sum`` over the same bytes, 256 MiB, 1 GiB and 2 GiB of
  ramdisks (+ ``eif_build`` when on PATH); peak RSS;
- eifstep: the build's EIF step (``doit eif`` with only the EIF out of date) vs ``sha384sum``;
- inspect: ``diff`` vs ``pcrs`` on both of two 1 GiB EIFs, ``extract --unpack`` vs ``extract`` +
  GNU ``cpio -idm``;
- ramdisk: ``eifbuild ramdisk`` vs GNU cpio on a 50,000-file tree (byte-identical outputs);
- noop: ``doit eif`` when nothing changed, on a project with a 50,000-file rootfs, and after one
  file changed;
- demo: the demo build cold (empty store, download and zig caches) vs warm (caches kept) vs no-op;
- remote: a cold build from a warm remote cache (moto's S3 on 127.0.0.1);
- realapp: a debootstrap'd Debian system as an OCI layout, cold and no-op ``doit eif`` vs GNU tar +
  cpio + gzip + pack (needs debootstrap and root the first time; skipped otherwise).

Every command runs in a child process, median of --repeat runs (after one untimed warm-up), with
min-max. Nothing about times is asserted: the exit status is 1 only when a benchmarked command
failed or produced a wrong result (a no-op that ran a task, archives that differ).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Final

import suite_demo
import suite_eifstep
import suite_inspect
import suite_noop
import suite_pack
import suite_ramdisk
import suite_realapp
import suite_remote
from harness import CommandFailed, load_average, progress, run
from options import Options
from report import markdown, plain

if TYPE_CHECKING:
    from collections.abc import Callable

    from report import Row

SUITES: Final[dict[str, Callable[[Options], list[Row]]]] = {
    "pack": suite_pack.rows,
    "eifstep": suite_eifstep.rows,
    "inspect": suite_inspect.rows,
    "ramdisk": suite_ramdisk.rows,
    "noop": suite_noop.rows,
    "demo": suite_demo.rows,
    "remote": suite_remote.rows,
    "realapp": suite_realapp.rows,
}
QUICK_SKIPS: Final = frozenset({"demo", "realapp"})  # minutes: musl builds, a Debian rootfs


def _default_data() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "eifbuild-bench"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="small sizes, one run each, no demo build")
    parser.add_argument("--only", action="append", choices=sorted(SUITES), help="run only this (repeatable)")
    parser.add_argument("--repeat", type=int, help="measured runs per command (default 5, quick 1)")
    parser.add_argument("--demo-repeat", type=int, help="cold/warm demo builds (default --repeat)")
    parser.add_argument("--python", default=sys.executable, help="interpreter for eifbuild and doit")
    parser.add_argument(
        "--before", metavar="PYTHON", help="also run an older eifbuild installed for this interpreter"
    )
    parser.add_argument("--data", type=Path, default=_default_data(), help="cache of generated inputs")
    parser.add_argument(
        "--pack-size", dest="pack_sizes", type=int, action="append", metavar="MIB", help="pack these sizes"
    )
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    return parser.parse_args(argv)


def make_options(args: argparse.Namespace, work: Path) -> Options:
    repeat = args.repeat or (1 if args.quick else 5)
    return Options(
        python=args.python,
        repo=Path(__file__).resolve().parent.parent,
        data=args.data,
        work=work,
        repeat=repeat,
        quick=args.quick,
        pack_sizes=(32,) if args.quick else tuple(args.pack_sizes or (256, 1024, 2048)),
        pack_ratio_size=32 if args.quick else suite_pack.RATIO_SIZE_MIB,
        tree_files=2_000 if args.quick else 50_000,
        noop_files=2_000 if args.quick else 50_000,
        demo_repeat=args.demo_repeat or repeat,
        before=args.before,
    )


def describe_machine(opts: Options) -> str:
    version = run([opts.python, "-c", "import sys; print(sys.version.split()[0])"], capture=True)
    os_name = platform.freedesktop_os_release().get("PRETTY_NAME", platform.system())
    cpus = len(os.sched_getaffinity(0))
    loads = ", ".join(f"{x:.2f}" for x in load_average())
    return f"{cpus} CPUs, {os_name}, Python {version.stdout.strip()}, load average {loads} at the start"


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.data.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="run-", dir=args.data))
    opts = make_options(args, work)
    chosen = args.only or [name for name in SUITES if not (args.quick and name in QUICK_SKIPS)]
    rows: list[Row] = []
    failures: list[str] = []
    try:
        machine = describe_machine(opts)
        progress(machine)
        for name in chosen:
            try:
                rows += SUITES[name](opts)
            except CommandFailed as exc:
                failures.append(f"{name}: {exc}")
                progress(f"{name} FAILED: {exc}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    loads = ", ".join(f"{x:.2f}" for x in load_average())
    print(f"{machine}; {loads} at the end; median of {opts.repeat} runs (min-max)")
    print(markdown(rows) if args.markdown else plain(rows))
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
