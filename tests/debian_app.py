"""A real app from Debian packages (#26): dash, python3.11's http.server, redis-server and socat.

``download_debs`` resolves the packages' dependency closure from an empty system with apt's own
resolver and fetches it with ``apt-get download`` into a cache directory (reused when complete);
``make_rootfs`` unpacks the .debs with ``dpkg-deb -x`` (no maintainer scripts) and does what the
scripts and debootstrap would have done that the apps need: the merged /usr, /etc/passwd and
/etc/group, writable dirs, then the app itself under /app.

The app, ``/app/start.sh`` (``#!/bin/sh``), serves /app/www with ``python3.11 -m http.server`` on
127.0.0.1:8000 and runs redis-server on 127.0.0.1:6379, each behind socat on a vsock port (5000 and
5001), and prints ``app: ready`` once both servers accept connections. The ports and socat's listen
addresses come from the environment (APP_HTTP_PORT, APP_REDIS_PORT, APP_HTTP_LISTEN,
APP_REDIS_LISTEN) so that the same rootfs can be checked on a host without vsock (``chroot`` with
``TCP-LISTEN``).

Nothing is pinned by hash: Debian's signed indexes verify what apt downloads. The exact versions
used are written to /app/versions.txt, so the image changes when Debian updates its packages.

CI pre-fetches the packages with ``python tests/debian_app.py --download``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PACKAGES = (
    "dash",  # /bin/sh
    "python3.11",  # the full standard library (http.server needs it), not only python3.11-minimal
    "socat",
    "redis-server",
    # init-system-helpers (which redis-server pre-depends on) needs usrmerge | usr-is-merged: name the
    # second, or apt picks usrmerge and with it perl (30 MB); the rootfs is merged by make_rootfs.
    "usr-is-merged",
)
ARCH = "amd64"
HTTP_PORT = 8000
REDIS_PORT = 6379
HTTP_VSOCK_PORT = 5000
REDIS_VSOCK_PORT = 5001
READY_LINE = "app: ready"
BIG_FILE = "big.bin"
BIG_SIZE = 3 * 1024 * 1024 + 12345  # several MiB, not a multiple of any buffer size
INDEX_HTML = "<!doctype html>\n<title>eifbuild</title>\n<p>Hello from Debian in an enclave.</p>\n"

# Paths that Debian's slim images exclude (dpkg path-exclude): documentation and translations.
PRUNED = ("usr/share/man", "usr/share/info", "usr/share/locale", "usr/share/lintian", "usr/share/doc")
MERGED = ("bin", "sbin", "lib", "lib64")  # bookworm's merged /usr: each a symlink to usr/<name>

START_SH = f"""\
#!/bin/sh
# eifbuild's Debian test app (tests/debian_app.py): python3 http.server and redis-server on loopback,
# each reachable through socat (vsock by default); prints "{READY_LINE}" once both servers accept.
set -eu
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
http_port=${{APP_HTTP_PORT:-{HTTP_PORT}}}
redis_port=${{APP_REDIS_PORT:-{REDIS_PORT}}}
http_listen=${{APP_HTTP_LISTEN:-VSOCK-LISTEN:{HTTP_VSOCK_PORT}}}
redis_listen=${{APP_REDIS_LISTEN:-VSOCK-LISTEN:{REDIS_VSOCK_PORT}}}
echo "app: starting (Debian packages: /app/versions.txt)"
python3.11 -m http.server "$http_port" --bind 127.0.0.1 --directory /app/www &
redis-server --bind 127.0.0.1 --port "$redis_port" --save '' --appendonly no --protected-mode no \\
    --daemonize no --dir /var/lib/redis --logfile '' &
socat "$http_listen,fork,reuseaddr" "TCP:127.0.0.1:$http_port" &
socat "$redis_listen,fork,reuseaddr" "TCP:127.0.0.1:$redis_port" &
python3.11 -c '
import socket, sys, time
deadline = time.monotonic() + 120
for port in map(int, sys.argv[1:]):
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"app: port {{port}} never accepted")
            time.sleep(0.1)
' "$http_port" "$redis_port"
echo "{READY_LINE}"
wait
"""

ETC_FILES = {
    "passwd": """\
root:x:0:0:root:/root:/bin/sh
redis:x:100:101::/var/lib/redis:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
""",
    "group": """\
root:x:0:
redis:x:101:
nogroup:x:65534:
""",
    "hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
}  # no maintainer scripts ran: redis-server's would have added its user (redis looks users up)


class DebianError(RuntimeError):
    """apt or dpkg-deb failed, or the packages cannot be resolved."""


def big_file_bytes(size: int = BIG_SIZE) -> bytes:
    """The deterministic multi-MiB file served as /big.bin (sha256 counter blocks)."""
    blocks = (hashlib.sha256(f"eifbuild-debian-app:{i}".encode()).digest() for i in range(-(-size // 32)))
    return b"".join(blocks)[:size]


def default_cache_root() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "eifbuild-test" / "debs"


def _run(cmd: list[str], **kwargs: object) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        raise DebianError(f"{' '.join(cmd[:3])} … failed ({result.returncode}):\n{result.stderr.strip()}")
    out: str = result.stdout
    return out


def resolve(packages: tuple[str, ...] | list[str] = PACKAGES) -> list[tuple[str, str]]:
    """The dependency closure of ``packages`` on an empty amd64 system, as (name, version), sorted.

    apt's own resolver (``apt-get install --simulate`` against an empty dpkg status) picks one
    alternative of each ``a | b`` and a real provider for each virtual package, and includes the
    pre-dependencies. Essential packages are not added unless something depends on them: the rootfs
    needs only what the apps run.
    """
    with tempfile.NamedTemporaryFile(prefix="eifbuild-empty-status.") as status:
        out = _run(
            [
                "apt-get",
                "install",
                "--simulate",
                "--no-install-recommends",
                "-o",
                f"Dir::State::status={status.name}",
                "-o",
                f"APT::Architectures={ARCH}",
                "-o",
                "Dir::Cache::pkgcache=",  # don't rewrite the host's apt caches for this status
                "-o",
                "Dir::Cache::srcpkgcache=",
                *packages,
            ],
            env={**os.environ, "LC_ALL": "C"},
        )
    found = []
    for line in out.splitlines():
        # Inst libc6 (2.36-9+deb12u14 Debian:12.13/stable [amd64])
        if line.startswith("Inst "):
            name, version = line.split()[1], line.split()[2].lstrip("(")
            found.append((name.split(":")[0], version))
    if not found:
        raise DebianError(f"apt resolved nothing for {packages} (run apt-get update?):\n{out}")
    return sorted(found)


def download_debs(
    packages: tuple[str, ...] | list[str] = PACKAGES, cache_dir: Path | None = None
) -> tuple[list[Path], list[tuple[str, str]]]:
    """The .debs of ``packages``' closure (and their names and versions), downloaded once.

    The cache directory is ``<cache_dir or ~/.cache/eifbuild-test/debs>/<hash of the sorted
    name=version list>``; it is complete when its ``versions.txt`` exists (written last).
    """
    closure = resolve(packages)
    listing = "".join(f"{name} {version}\n" for name, version in closure)
    digest = hashlib.sha256(listing.encode()).hexdigest()[:16]
    target = (cache_dir or default_cache_root()) / digest
    if not (target / "versions.txt").is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = Path(tempfile.mkdtemp(prefix=f".{digest}.", dir=target.parent))
        try:
            _run(["apt-get", "download", *(f"{n}={v}" for n, v in closure)], cwd=partial)
            got = sorted(partial.glob("*.deb"))
            if len(got) != len(closure):
                raise DebianError(f"apt-get download gave {len(got)} .debs for {len(closure)} packages")
            (partial / "versions.txt").write_text(listing)
            shutil.rmtree(target, ignore_errors=True)
            partial.rename(target)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    return sorted(target.glob("*.deb")), closure


def _merge_usr(root: Path) -> None:
    """Move /bin, /sbin, /lib, /lib64 into /usr and leave symlinks, as a merged bookworm system has.

    Packages built for bookworm still ship files under /bin and /lib (``dpkg-deb -x`` replaces a
    symlinked directory with a real one, so the links can only be made afterwards).
    """
    for name in MERGED:
        top = root / name
        if top.is_symlink() or not top.exists():
            continue
        dest = root / "usr" / name
        _move_tree(top, dest)
        top.rmdir()
        top.symlink_to(f"usr/{name}")


def _move_tree(src: Path, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(src.iterdir()):
        target = dest / entry.name
        if entry.is_dir() and not entry.is_symlink():
            if target.exists() and not (target.is_dir() and not target.is_symlink()):
                raise DebianError(f"merging /usr: {entry} is a directory, {target} is not")
            _move_tree(entry, target)
            entry.rmdir()
        elif target.exists() or target.is_symlink():
            raise DebianError(f"merging /usr: both {entry} and {target} exist")
        else:
            entry.rename(target)


def _prune(root: Path) -> None:
    for rel in PRUNED:
        path = root / rel
        if rel == "usr/share/doc" and path.is_dir():  # keep the licences
            for entry in path.rglob("*"):
                if entry.is_file() and not entry.is_symlink() and entry.name != "copyright":
                    entry.unlink()
            continue
        shutil.rmtree(path, ignore_errors=True)


def make_rootfs(debs: list[Path], root: Path, versions: list[tuple[str, str]] | None = None) -> Path:
    """Unpack ``debs`` into ``root`` and add the app; returns ``root``.

    ``versions`` (for /app/versions.txt) defaults to the list download_debs keeps beside the .debs.
    """
    if versions is None:
        listing = (debs[0].parent / "versions.txt").read_text().splitlines()
        versions = [(name, version) for name, version in (line.split() for line in listing)]
    root.mkdir(parents=True, exist_ok=True)
    for deb in sorted(debs):
        _run(["dpkg-deb", "-x", str(deb), str(root)])
    _merge_usr(root)
    _prune(root)
    sh = root / "usr" / "bin" / "sh"  # dash ships /bin/sh -> dash; dash's postinst would make it
    if not sh.is_symlink() and not sh.exists():
        sh.symlink_to("dash")
    etc = root / "etc"
    for name, text in ETC_FILES.items():
        (etc / name).write_text(text)
    for rel in ("tmp", "run", "proc", "sys", "dev", "root", "var/lib/redis", "var/log/redis"):
        (root / rel).mkdir(parents=True, exist_ok=True)
    app = root / "app"
    (app / "www").mkdir(parents=True, exist_ok=True)
    (app / "www" / "index.html").write_text(INDEX_HTML)
    (app / "www" / BIG_FILE).write_bytes(big_file_bytes())
    (app / "versions.txt").write_text("".join(f"{name} {version}\n" for name, version in versions))
    start = app / "start.sh"
    start.write_text(START_SH)
    start.chmod(0o755)
    return root


def tree_size(root: Path) -> int:
    """Bytes of the regular files under ``root`` (symlinks not followed)."""
    return sum(p.lstat().st_size for p in root.rglob("*") if p.is_file() and not p.is_symlink())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--download", action="store_true", help="fill the package cache (CI pre-fetch)")
    parser.add_argument("--rootfs", type=Path, metavar="DIR", help="also make the rootfs in DIR")
    parser.add_argument(
        "--cache", type=Path, metavar="DIR", help="cache root (default ~/.cache/eifbuild-test/debs)"
    )
    args = parser.parse_args(argv)
    if not (args.download or args.rootfs):
        parser.error("nothing to do: give --download and/or --rootfs DIR")
    debs, versions = download_debs(PACKAGES, args.cache)
    total = sum(d.stat().st_size for d in debs)
    print(f"{len(debs)} .debs, {total / 1e6:.1f} MB, in {debs[0].parent}")
    if args.rootfs:
        make_rootfs(debs, args.rootfs, versions)
        print(f"rootfs {args.rootfs}: {tree_size(args.rootfs) / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
