"""A throw-away single-node Ceph cluster with RADOS Gateway (S3) on 127.0.0.1, from Debian's packages
(``ceph-mon``, ``ceph-osd``, ``radosgw``), over HTTP and HTTPS (a self-signed certificate made for
the run). One monitor (v1 protocol, no auth), one OSD on memstore (objects in the OSD's RAM), one
radosgw with beast on two ports. It comes up in a few seconds and goes away with its directory.

Used by the remote-cache tests (one cluster for the whole test run) and by the benchmark; by hand::

    python3 tests/ceph_rgw.py     # starts one, prints its endpoints and credentials, stops on Ctrl-C
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

DAEMONS = ("ceph-mon", "ceph-osd", "radosgw")
ACCESS_KEY = "eifbuild-test-access"
SECRET_KEY = "eifbuild-test-secret-not-a-secret"  # noqa: S105 - a throw-away cluster's test user
START_TIMEOUT = 90.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded here, not in the forked child


class CephError(RuntimeError):
    """The cluster did not come up; the message ends with the tail of the daemon's log."""


def available() -> bool:
    return all(shutil.which(name) for name in (*DAEMONS, "ceph", "monmaptool", "radosgw-admin"))


def _die_with_parent() -> None:
    """In the daemon, before exec: SIGKILL it when the process that started it dies, so a test run
    that is killed (no fixture teardown) leaves no cluster behind."""
    _LIBC.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _self_signed(directory: Path) -> tuple[Path, Path]:
    """A throw-away certificate for 127.0.0.1 and localhost (PEM files: cert, key)."""
    from cryptography import x509  # noqa: PLC0415
    from cryptography.hazmat.primitives import hashes, serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric import ec  # noqa: PLC0415
    from cryptography.x509.oid import NameOID  # noqa: PLC0415

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "eifbuild test rgw")])
    now = datetime.datetime.now(datetime.timezone.utc)
    alt = x509.SubjectAlternativeName(
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(alt, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "rgw.crt", directory / "rgw.key"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


def _config(d: Path, fsid: str, ports: tuple[int, int, int], cert: Path, key: Path) -> str:
    mon_port, http, https = ports
    frontends = (
        f"beast endpoint=127.0.0.1:{http} ssl_endpoint=127.0.0.1:{https} "
        f"ssl_certificate={cert} ssl_private_key={key}"
    )
    return f"""[global]
fsid = {fsid}
mon host = v1:127.0.0.1:{mon_port}
mon initial members = a
auth cluster required = none
auth service required = none
auth client required = none
auth supported = none
keyring = /dev/null
ms bind ipv6 = false
ms bind msgr2 = false
public addr = 127.0.0.1
cluster addr = 127.0.0.1
run dir = {d}/run
log file = {d}/log/$name.log
admin socket = {d}/run/$name.asok
crash dir = {d}/crash
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
osd crush chooseleaf type = 0

[mon]
mon data = {d}/mon/$cluster-$id
paxos propose interval = 0.05
paxos min wait = 0.01
mon data avail warn = 1
mon data avail crit = 0

[osd]
osd data = {d}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = 4294967296
osd crush update on start = false
osd class update on start = false

[client.rgw.a]
rgw frontends = {frontends}
rgw data = {d}/rgw
rgw gc obj min wait = 10
rgw gc processor period = 10
rgw dns name = localhost
"""


class CephRgw:
    """``start()`` a cluster in a temp dir; ``endpoint`` (HTTP), ``https_endpoint`` and ``ca_bundle``
    (the certificate the client must trust) then describe it; ``stop()`` removes everything."""

    def __init__(self, access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY) -> None:
        self.access_key, self.secret_key = access_key, secret_key
        self.dir = Path(tempfile.mkdtemp(prefix="eifbuild-ceph-"))
        self.http_port, self.https_port, self.mon_port = _free_port(), _free_port(), _free_port()
        self.endpoint = f"http://127.0.0.1:{self.http_port}"
        self.https_endpoint = f"https://127.0.0.1:{self.https_port}"
        self.ca_bundle = self.dir / "rgw.crt"
        self._procs: list[subprocess.Popen[bytes]] = []

    # -- running commands -------------------------------------------------------------------------
    @property
    def conf(self) -> Path:
        return self.dir / "ceph.conf"

    def _run(self, *argv: str, timeout: float = 30) -> str:
        cmd = [argv[0], "-c", str(self.conf), *argv[1:]]
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise CephError(f"{' '.join(argv[:3])}: {result.stderr.strip()[-800:]}")
        return result.stdout

    def _daemon(self, *argv: str) -> None:
        log = open(self.dir / "log" / f"{argv[0]}.out", "ab")  # noqa: SIM115 - the child holds it
        proc = subprocess.Popen(
            [argv[0], "-c", str(self.conf), "-f", *argv[1:]],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - one prctl call, no Python locks taken
        )
        log.close()
        self._procs.append(proc)

    def _retried(self, deadline: float, *argv: str) -> str:
        while True:
            try:
                return self._run(*argv, timeout=10)
            except (CephError, subprocess.TimeoutExpired):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)

    def _wait(self, what: str, ready: Any, deadline: float) -> None:
        while time.monotonic() < deadline:
            for proc in self._procs:
                if proc.poll() is not None:
                    raise CephError(f"{proc.args[0]} exited ({proc.returncode}) before {what}{self._tail()}")
            with contextlib.suppress(CephError, subprocess.TimeoutExpired, OSError):
                if ready():
                    return
            time.sleep(0.05)
        raise CephError(f"timed out waiting for {what}{self._tail()}")

    def _tail(self) -> str:
        lines: list[str] = []
        for log in sorted((self.dir / "log").glob("*")):
            text = log.read_text(errors="replace").strip().splitlines()[-5:]
            lines += [f"  {log.name}: {line}" for line in text]
        return ":\n" + "\n".join(lines) if lines else ""

    # -- life cycle -------------------------------------------------------------------------------
    def start(self) -> CephRgw:
        try:
            self._start(time.monotonic() + START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self, deadline: float) -> None:
        for sub in ("run", "log", "crash", "mon", "osd/ceph-0", "rgw"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        cert, key = _self_signed(self.dir)
        fsid = str(uuid.uuid4())
        self.conf.write_text(
            _config(self.dir, fsid, (self.mon_port, self.http_port, self.https_port), cert, key)
        )
        monmap = str(self.dir / "monmap")
        subprocess.run(
            [
                "monmaptool",
                "--create",
                "--fsid",
                fsid,
                "--addv",
                "a",
                f"[v1:127.0.0.1:{self.mon_port}]",
                monmap,
            ],
            check=True,
            capture_output=True,
        )
        self._run("ceph-mon", "--mkfs", "-i", "a", "--monmap", monmap)
        self._daemon("ceph-mon", "-i", "a")
        self._wait("the monitor", lambda: bool(self._run("ceph", "mon", "stat", timeout=5)), deadline)
        osd_uuid = str(uuid.uuid4())
        # a monitor that answers `mon stat` may still refuse a command for a moment (seen once under
        # load: EPERM getting command descriptions); both commands are idempotent, so retry them
        osd_id = self._retried(deadline, "ceph", "osd", "new", osd_uuid).strip()
        self._retried(deadline, "ceph", "osd", "crush", "add", f"osd.{osd_id}", "1.0", "root=default")
        self._run("ceph-osd", "-i", osd_id, "--mkfs", "--osd-uuid", osd_uuid)
        self._daemon("ceph-osd", "-i", osd_id)
        self._wait(
            "the OSD", lambda: f"osd.{osd_id} up" in self._run("ceph", "osd", "dump", timeout=5), deadline
        )
        self._daemon("radosgw", "-n", "client.rgw.a")
        self._wait("radosgw", self._rgw_answers, deadline)
        self._run(
            "radosgw-admin", "user", "create", "--uid", "eifbuild-test", "--display-name", "eifbuild test",
            "--access-key", self.access_key, "--secret", self.secret_key,
        )  # fmt: skip
        self._wait("the S3 user", self._user_answers, deadline)

    def _rgw_answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.http_port), timeout=1):
            return True

    def _user_answers(self) -> bool:
        self.client().list_buckets()
        return True

    def stop(self) -> None:
        for proc in self._procs:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 3
        for proc in self._procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:  # radosgw ignores SIGTERM
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        self._procs.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> CephRgw:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- a client ---------------------------------------------------------------------------------
    def client(self, *, https: bool = False) -> Any:
        """A boto3 client that works against RGW over either transport (checksums only when required)."""
        import boto3  # noqa: PLC0415 - the optional extra
        from botocore.config import Config  # noqa: PLC0415

        config = Config(
            request_checksum_calculation="when_required", response_checksum_validation="when_required"
        )
        return boto3.client(
            "s3",
            endpoint_url=self.https_endpoint if https else self.endpoint,
            region_name="us-east-1",
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            verify=str(self.ca_bundle) if https else None,
            config=config,
        )


def main() -> int:
    if not available():
        print(
            "needs ceph-mon, ceph-osd and radosgw: apt-get install ceph-mon ceph-osd radosgw", file=sys.stderr
        )
        return 2
    started = time.monotonic()
    with CephRgw() as rgw:
        print(f"up in {time.monotonic() - started:.1f} s")
        print(f"endpoint_url = {rgw.endpoint}   (or {rgw.https_endpoint}, AWS_CA_BUNDLE={rgw.ca_bundle})")
        print(f"AWS_ACCESS_KEY_ID={rgw.access_key} AWS_SECRET_ACCESS_KEY={rgw.secret_key}")
        with contextlib.suppress(KeyboardInterrupt):
            signal.pause()
    return 0


if __name__ == "__main__":
    sys.exit(main())
