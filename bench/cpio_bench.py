"""Time eifbuild's cpio writer against GNU cpio on a generated tree; print the time ratio.

    python bench/cpio_bench.py [--files 50000] [--repeat 3] [--dir DIR]

Both sides archive the same tree (all mtimes set to one value first, as the canonical pipeline
does) into a file on the same filesystem: eifbuild walks the tree and writes the archive in-process;
GNU runs ``find | sort -z | cpio -o -H newc -R +0:+0 --reproducible --null``. The best of
``--repeat`` interleaved runs is compared (caches warmed by one untimed run each), as wall time
and as CPU time (steadier on a busy machine). The script also checks that both archives are
byte-identical. The ratios are printed, never asserted (machines differ).
"""

from __future__ import annotations

import argparse
import filecmp
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from eifbuild.cpio import write_cpio_file
from eifbuild.ramdisk import tree_entries

MTIME = 1_700_000_000
GNU = (
    "find . -mindepth 1 -printf '%P\\0' | LC_ALL=C sort -z"
    ' | cpio -o -H newc -R +0:+0 --reproducible --null --quiet > "$OUT"'
)


def make_tree(root: Path, files: int, seed: int = 1) -> int:
    """``files`` regular files in 2-level nested dirs, mostly small (like a rootfs), some symlinks."""
    rng = random.Random(seed)  # noqa: S311 - reproducible test data, not secrets
    total = 0
    per_dir = 100
    for i in range(files):
        d = root / f"d{i // (per_dir * 20):03d}" / f"s{(i // per_dir) % 20:02d}"
        if i % per_dir == 0:
            d.mkdir(parents=True, exist_ok=True)
        size = rng.choice((0, 100, 700, 2_000, 6_000, 20_000)) if i % 1000 else 1 << 20
        (d / f"file-{i:06d}.dat").write_bytes(rng.randbytes(size))
        total += size
        if i % 50 == 0:
            os.symlink(f"file-{i:06d}.dat", d / f"link-{i:06d}")
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.utime(os.path.join(dirpath, name), (MTIME, MTIME), follow_symlinks=False)
    return total


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_gnu(tree: Path, out: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of the GNU pipeline (find + sort + cpio + the shell)."""
    cpu, start = _children_cpu(), time.perf_counter()
    env = {**os.environ, "OUT": str(out)}
    subprocess.run(["bash", "-o", "pipefail", "-c", GNU], cwd=tree, env=env, check=True)
    return time.perf_counter() - start, _children_cpu() - cpu


def run_eifbuild(tree: Path, out: Path) -> tuple[float, float]:
    """(wall, CPU) seconds of walking the tree and writing the archive (all threads)."""
    cpu, start = time.process_time(), time.perf_counter()
    write_cpio_file(tree_entries(tree, modes="preserve"), out, mtime=MTIME)
    return time.perf_counter() - start, time.process_time() - cpu


def measure(tree: Path, work: Path, repeat: int) -> bool:
    gnu_out, ours_out = work / "gnu.cpio", work / "eifbuild.cpio"
    run_gnu(tree, gnu_out)
    run_eifbuild(tree, ours_out)
    gnu_runs, our_runs = [], []
    for _ in range(repeat):  # interleaved, so load changes hit both sides alike
        gnu_runs.append(run_gnu(tree, gnu_out))
        our_runs.append(run_eifbuild(tree, ours_out))
    gnu_wall, gnu_cpu = min(w for w, _ in gnu_runs), min(c for _, c in gnu_runs)
    our_wall, our_cpu = min(w for w, _ in our_runs), min(c for _, c in our_runs)
    same = filecmp.cmp(gnu_out, ours_out, shallow=False)
    print(f"GNU cpio:  {gnu_wall:.3f} s wall, {gnu_cpu:.3f} s CPU (best of {repeat})")
    print(f"eifbuild:  {our_wall:.3f} s wall, {our_cpu:.3f} s CPU")
    print(
        f"ratio eifbuild/GNU: {our_wall / gnu_wall:.2f} wall, {our_cpu / gnu_cpu:.2f} CPU (below 1: faster)"
    )
    print(f"archives byte-identical: {same}")
    return same


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--files", type=int, default=50_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dir", type=Path, help="work directory (default: a temp dir, removed afterwards)")
    args = parser.parse_args()
    if shutil.which("cpio") is None:
        print("GNU cpio is not installed", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="cpio-bench-", dir=args.dir))
    try:
        tree = work / "tree"
        tree.mkdir()
        start = time.perf_counter()
        size = make_tree(tree, args.files)
        print(
            f"tree: {args.files} files, {size / 2**20:.1f} MiB, made in {time.perf_counter() - start:.1f} s"
        )
        return 0 if measure(tree, work, args.repeat) else 1
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    sys.exit(main())
