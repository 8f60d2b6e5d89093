"""Real software in an EIF (#26): a rootfs of Debian packages (tests/debian_app.py), with a
``#!/bin/sh`` entrypoint, python3's http.server and redis-server on loopback, each behind socat's
``VSOCK-LISTEN``, built with ``doit eif`` and booted on QEMU's nitro-enclave machine, reached from
the host through ``eifbuild boot --publish``.

- The rootfs is first checked on the host (``chroot`` in private mount and PID namespaces, socat on
  ``TCP-LISTEN`` instead of vsock): it proves the rootfs is complete without a boot.
- The boot needs a kernel with ``#!`` scripts, IPv4 and the rest (the "app" kernel,
  recipes/demo-app.toml) and ``eifbuild boot --publish``; the tiny demo kernel has neither
  BINFMT_SCRIPT nor INET, so with it the EIF builds but the boot test is skipped.

The packages come from Debian's mirror with ``apt-get download`` (about 23 MB, cached in
~/.cache/eifbuild-test/debs/; ``.ci/run`` pre-fetches them).
"""

from __future__ import annotations

import contextlib
import http.client
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from conftest import IN_CI, require_tool
from debian_app import (
    BIG_FILE,
    HTTP_VSOCK_PORT,
    INDEX_HTML,
    READY_LINE,
    REDIS_VSOCK_PORT,
    big_file_bytes,
    download_debs,
    make_rootfs,
    tree_size,
)

from eifbuild.cli import main
from eifbuild.eif import read_eif
from eifbuild.util.tomlfile import read_toml

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
NEEDED = ("CONFIG_BINFMT_SCRIPT", "CONFIG_INET")  # /app/start.sh's #!, and 127.0.0.1
# Guest RAM: boot's default, max(256, 4 x EIF size) = 280 MiB here, is enough (~125 MB left once the
# 71 MB rootfs is unpacked); at 200 MiB the kernel cannot unpack the initramfs ("write error").


def _kernel_config(recipe: str) -> str | None:
    """The x86_64 kernel .config a recipe in recipes/ pins ("" if unknown), None if it pins no kernel."""
    path = REPO / "recipes" / recipe
    if not path.is_file():
        return None
    doc = read_toml(path, "recipe")
    defaults = doc.get("defaults", {})
    if "kernel" not in defaults:
        return None
    source = doc.get("sources", {}).get(defaults.get("kernel_config", ""), {})
    rel = source.get("x86_64", source).get("path")
    return (path.parent / rel).read_text() if rel else ""


# The kernel recipe the EIF is built with: the app kernel once its recipe pins one, else the tiny
# demo kernel (no #! scripts, no IPv4: the EIF builds, the app cannot run and the boot test skips).
# $EIFBUILD_DEBIAN_APP_RECIPE names another recipe in recipes/.
KERNEL_RECIPE = os.environ.get("EIFBUILD_DEBIAN_APP_RECIPE") or (
    "demo-app.toml" if _kernel_config("demo-app.toml") is not None else "demo.toml"
)


def _boot_has_publish() -> bool:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        main(["boot", "--help"])
    return "--publish" in out.getvalue()


def _boot_skip() -> str:
    config = (_kernel_config(KERNEL_RECIPE) or "").splitlines()
    missing = [name for name in NEEDED if f"{name}=y" not in config]
    if missing:
        return f"recipes/{KERNEL_RECIPE}'s x86_64 kernel lacks {', '.join(missing)} (#! scripts, IPv4)"
    return "" if _boot_has_publish() else "eifbuild boot has no --publish"


BOOT_SKIP = _boot_skip()

EIF_TOML = f"""\
[eif]
name = "debian-app"
version = "0.1.0"
arch = ["x86_64"]
output = "build"
recipes = ["recipes/{KERNEL_RECIPE}"]
build_time = "2024-01-01T00:00:00+00:00"
allow_paths_outside = true  # the rootfs is made in its own temp dir

[bootstrap]
init = {{ compile = "eifbuild-init" }}
nsm = "none"

[app]
rootfs = "{{rootfs}}"
cmd = ["/app/start.sh"]
env = {{ PATH = "/usr/sbin:/usr/bin:/sbin:/bin", HOME = "/root" }}
"""
DODO = "from eifbuild.tasks import *  # noqa: F403\n"


# -- the rootfs -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def debian_rootfs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    require_tool("apt-get")
    require_tool("dpkg-deb")
    started = time.monotonic()
    debs, versions = download_debs()
    fetched = time.monotonic()
    root = make_rootfs(debs, tmp_path_factory.mktemp("debian-app") / "rootfs", versions)
    print(
        f"debian app: {len(debs)} .debs ({sum(d.stat().st_size for d in debs) / 1e6:.1f} MB) in "
        f"{fetched - started:.1f} s, rootfs {tree_size(root) / 1e6:.1f} MB in {time.monotonic() - fetched:.1f} s"
    )
    return root


def test_the_rootfs_is_a_merged_debian_with_the_app(debian_rootfs: Path) -> None:
    for name in ("bin", "sbin", "lib", "lib64"):
        assert os.readlink(debian_rootfs / name) == f"usr/{name}"
    assert os.readlink(debian_rootfs / "usr/bin/sh") == "dash"
    loader = debian_rootfs / "lib64" / "ld-linux-x86-64.so.2"
    assert loader.is_symlink()
    assert (debian_rootfs / os.readlink(loader).lstrip("/")).is_file()  # resolves inside the rootfs
    start = debian_rootfs / "app" / "start.sh"
    assert start.read_text().startswith("#!/bin/sh\n")
    assert start.stat().st_mode & 0o777 == 0o755
    versions = dict(line.split() for line in (debian_rootfs / "app/versions.txt").read_text().splitlines())
    assert {"dash", "libc6", "python3.11", "libpython3.11-stdlib", "redis-server", "socat"} <= versions.keys()
    assert "perl" not in versions  # usr-is-merged, not usrmerge, satisfies init-system-helpers


def _free_ports(count: int) -> list[int]:
    socks = [socket.create_server(("127.0.0.1", 0)) for _ in range(count)]
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


class Console:
    """A process's merged stdout/stderr, read by a thread; ``wait_for`` a line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line)

    def close(self) -> None:
        self._thread.join(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    @property
    def text(self) -> str:
        return "".join(self.lines)

    def wait_for(self, needle: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(needle in line for line in self.lines):
                return
            if self.proc.poll() is not None:
                self._thread.join(5)
                pytest.fail(f"exited ({self.proc.returncode}) before {needle!r}:\n{self.text}")
            time.sleep(0.2)
        pytest.fail(f"no {needle!r} after {timeout:g} s:\n{self.text}")


@contextlib.contextmanager
def _running(cmd: list[str], env: dict[str, str] | None = None) -> Iterator[Console]:
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
        start_new_session=True,
    )
    console = Console(proc)
    try:
        yield console
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)  # eifbuild boot stops QEMU on it
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
        console.close()


def test_the_rootfs_serves_http_and_redis_in_a_chroot_on_the_host(
    debian_rootfs: Path, tmp_path: Path
) -> None:
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("CI runs as root: chroot and unshare need it")
        pytest.skip("chroot and mount namespaces need root")
    unshare = require_tool("unshare")
    http_port, redis_port, http_socat, redis_socat = _free_ports(4)
    env = {
        "APP_HTTP_PORT": str(http_port),
        "APP_REDIS_PORT": str(redis_port),
        "APP_HTTP_LISTEN": f"TCP-LISTEN:{http_socat},bind=127.0.0.1",
        "APP_REDIS_LISTEN": f"TCP-LISTEN:{redis_socat},bind=127.0.0.1",
    }
    # A copy: python writes __pycache__ into the rootfs it runs from, and the EIF is built from the original.
    root = str(shutil.copytree(debian_rootfs, tmp_path / "rootfs", symlinks=True))
    # Private mount and PID namespaces: proc and /dev vanish, and every app process dies, with it.
    script = 'mount -t proc proc "$1/proc" && mount --bind /dev "$1/dev" && exec chroot "$1" /app/start.sh'
    cmd = [unshare, "--mount", "--propagation", "private", "--pid", "--fork", "--kill-child"]
    with _running([*cmd, "sh", "-c", script, "sh", root], env=env) as console:
        console.wait_for(READY_LINE, 60)
        _check_http(http_port)
        _check_redis(redis_port)
        _wait_for_socat(http_socat, HTTP_PROBE)  # socat may start listening after the servers do
        _wait_for_socat(redis_socat, REDIS_PROBE)
        _check_http(http_socat)  # and through socat
        _check_redis(redis_socat)
    assert "Exec format error" not in console.text


# -- the services, from the host ------------------------------------------------------------------------
HTTP_PROBE = b"HEAD / HTTP/1.0\r\n\r\n"
REDIS_PROBE = b"PING\r\n"  # redis' inline command form


def _wait_for_socat(port: int, probe: bytes, timeout: float = 60) -> None:
    """Until ``probe`` sent to ``port`` gets an answer: the app's ready line does not wait for socat."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
                sock.sendall(probe)
                if sock.recv(1):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"nothing answers through 127.0.0.1:{port} after {timeout:g} s")
        time.sleep(0.5)


def _get(port: int, path: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def _check_http(port: int) -> None:
    assert _get(port, "/") == (200, INDEX_HTML.encode())
    assert _get(port, "/nothing-here")[0] == 404
    big = big_file_bytes()
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: _get(port, p), ["/" + BIG_FILE] * 3 + ["/index.html"]))
    assert [status for status, _ in results] == [200] * 4
    for _, body in results[:3]:
        assert body == big  # compared as bytes, not only by length
    assert results[3][1] == INDEX_HTML.encode()


def _resp(*args: bytes) -> bytes:
    return b"*%d\r\n" % len(args) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in args)


def _read_reply(sock: socket.socket, want: int) -> bytes:
    data = b""
    while len(data) < want:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _check_redis(port: int) -> None:
    value = big_file_bytes(200_000)  # larger than socat's buffers
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.sendall(_resp(b"PING"))
        assert _read_reply(sock, 7) == b"+PONG\r\n"
        sock.sendall(_resp(b"SET", b"eifbuild", value))
        assert _read_reply(sock, 5) == b"+OK\r\n"
        sock.sendall(_resp(b"GET", b"eifbuild"))
        header = b"$%d\r\n" % len(value)
        assert _read_reply(sock, len(header) + len(value) + 2) == header + value + b"\r\n"
        sock.sendall(_resp(b"GET", b"missing"))
        assert _read_reply(sock, 5) == b"$-1\r\n"


# -- the EIF --------------------------------------------------------------------------------------------
def _build(project: Path, rootfs: Path) -> tuple[Path, float]:
    """``doit eif`` on a new project (its own store) for ``rootfs``; the EIF and the seconds it took."""
    shutil.copytree(REPO / "recipes", project / "recipes")
    shutil.copytree(REPO / "examples" / "kernel", project / "examples" / "kernel")
    (project / "eif.toml").write_text(EIF_TOML.replace("{rootfs}", str(rootfs)))
    (project / "dodo.py").write_text(DODO)
    env = {k: v for k, v in os.environ.items() if k not in {"EIFBUILD_CACHE", "SOURCE_DATE_EPOCH"}}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "doit", "eif"],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=1200,
    )
    took = time.monotonic() - started
    assert result.returncode == 0, result.stdout + result.stderr
    return project / "build" / "debian-app-x86_64.eif", took


@pytest.fixture(scope="module")
def debian_eif(debian_rootfs: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    eif, took = _build(tmp_path_factory.mktemp("debian-app-project"), debian_rootfs)
    ramdisks = [s.size for s in read_eif(eif).ramdisks]
    print(
        f"debian app EIF ({KERNEL_RECIPE}): {eif.stat().st_size / 1e6:.1f} MB, ramdisks "
        f"{', '.join(f'{n / 1e6:.1f} MB' for n in ramdisks)}, doit eif {took:.1f} s"
    )
    return eif


def test_the_debian_app_eif_builds_and_reproduces(debian_eif: Path, tmp_path: Path) -> None:
    image = read_eif(debian_eif)
    assert image.arch == "x86_64"
    assert image.ramdisks[-1].size > 50_000_000  # the rootfs is in the app ramdisk
    # The same .debs unpacked again, into another directory, built in another project and store:
    # the same bytes (eifbuild orders the files and normalizes modes, owners and mtimes).
    debs, versions = download_debs()
    again, _ = _build(tmp_path / "project", make_rootfs(debs, tmp_path / "rootfs", versions))
    assert again.read_bytes() == debian_eif.read_bytes()


@pytest.mark.skipif(bool(BOOT_SKIP), reason=BOOT_SKIP or "-")
def test_each_service_is_reached_from_the_host_through_publish(debian_eif: Path) -> None:
    http_port, redis_port = _free_ports(2)
    cmd = [
        sys.executable,
        "-m",
        "eifbuild",
        "boot",
        str(debian_eif),
        "--timeout",
        "1200",
        "--publish",
        f"{http_port}:{HTTP_VSOCK_PORT}",
        "--publish",
        f"{redis_port}:{REDIS_VSOCK_PORT}",
    ]
    started = time.monotonic()
    with _running(cmd) as console:
        console.wait_for(READY_LINE, 900)  # TCG: the kernel unpacks ~75 MB, python starts slowly
        ready = time.monotonic()
        _wait_for_socat(http_port, HTTP_PROBE)
        _wait_for_socat(redis_port, REDIS_PROBE)
        _check_http(http_port)
        _check_redis(redis_port)
        print(
            f"debian app boot: ready after {ready - started:.1f} s, checks {time.monotonic() - ready:.1f} s"
        )
    assert "-M nitro-enclave" in console.text
