"""Real boots on QEMU's nitro-enclave machine (x86_64, TCG): the EIF file itself, measured by QEMU,
eifbuild's vsock back-end answering the heartbeat, --vsock-forward, --attest and negative controls.

Needs a QEMU with the machine: ``EIFBUILD_QEMU_X86_64`` (``.ci/run`` builds one with
``eifbuild qemu build``) or a ``qemu-system-x86_64`` on PATH that has it. The attestation
tests need a kernel with the NSM driver (``CONFIG_NSM=y``) as the committed demo kernel.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from signing_helpers import certificate_for, pem_key

from eifbuild.cli import main
from eifbuild.eif.metadata import make_metadata
from eifbuild.eif.sign import PemSigner
from eifbuild.eif.writer import write_eif
from eifbuild.ramdisk import Entry, app_entries, bootstrap_entries, write_cpio_file
from eifbuild.runtime import boot
from eifbuild.store import Store
from eifbuild.toolchain import init_from_source
from eifbuild.toolchain.zig import compile_c_binary

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from eifbuild.eif import Signer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
KERNEL_DIR = REPO / "examples" / "kernel" / "x86_64"
HELLO_C = REPO / "examples" / "hello" / "hello.c"
HELLO_LINE = "Hello from the enclave, nitro!"
DEMO_HAS_NSM = "CONFIG_NSM=y" in (KERNEL_DIR / "bzImage.config").read_text()
needs_nsm = pytest.mark.skipif(
    not DEMO_HAS_NSM,
    reason="the committed x86_64 demo kernel has no NSM driver (CONFIG_NSM=y): /dev/nsm cannot exist",
)

SILENT_INIT_C = r"""
#include <stdio.h>
#include <unistd.h>
int main(void) { printf("silent init: no heartbeat\n"); fflush(stdout); for (;;) pause(); }
"""

VSOCK_CLIENT_C = r"""
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/vm_sockets.h>
int main(void)
{
    struct sockaddr_vm addr = {.svm_family = AF_VSOCK, .svm_cid = 3, .svm_port = 5000};
    char buf[128] = {0};
    int fd = socket(AF_VSOCK, SOCK_STREAM, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) != 0) { perror("connect"); return 1; }
    const char *ping = "ping from the enclave\n";
    if (write(fd, ping, strlen(ping)) < 0) { perror("write"); return 1; }
    ssize_t got = 0, n;
    while ((n = read(fd, buf + got, sizeof buf - 1 - (size_t)got)) > 0) got += n;
    printf("host said: %s\n", buf);
    close(fd);
    return 0;
}
"""




def _compile(store: Store, tmp_path: Path, source: str, name: str) -> Path:
    path = tmp_path / f"{name}.c"
    path.write_text(source)
    return compile_c_binary(store, [path], arch="x86_64", output_name=name).path


def _init(store: Store) -> Path:
    return init_from_source(store, boot.EIFBUILD_INIT_C, "x86_64").file("init")


def _hello_bin(store: Store) -> Path:
    return compile_c_binary(store, [HELLO_C], arch="x86_64", output_name="hello").path


def _hello_app(store: Store) -> list[Entry]:
    return app_entries([], ["/bin/hello"], {"HELLO_NAME": "nitro"}, files={"bin/hello": _hello_bin(store)})


def _eif(
    tmp_path: Path,
    bootstrap: Sequence[Entry],
    app: Sequence[Entry],
    *,
    name: str = "app",
    signer: Signer | None = None,
) -> Path:
    """An EIF as the demo is made: the committed demo kernel and its production cmdline."""
    kernel = KERNEL_DIR / "bzImage"
    ramdisks = []
    for part, entries in (("bootstrap", bootstrap), ("app", app)):
        path = tmp_path / f"{name}-{part}.cpio"
        write_cpio_file(entries, path, mtime=0)
        ramdisks.append(path)
    out = tmp_path / f"{name}.eif"
    write_eif(
        out,
        kernel=kernel,
        cmdline=(KERNEL_DIR / "cmdline").read_text().strip(),
        ramdisks=ramdisks,
        metadata=make_metadata(kernel=kernel),
        arch="x86_64",
        signer=signer,
    )
    return out


@pytest.fixture(scope="module")
def demo_eif(tmp_path_factory: pytest.TempPathFactory, shared_store: Store) -> Path:
    return _eif(
        tmp_path_factory.mktemp("demo"), bootstrap_entries(_init(shared_store)), _hello_app(shared_store)
    )


def _boot(eif: Path, qemu_path: str, **options: object) -> boot.BootResult:
    return boot.boot_eif(eif, boot.BootOptions(qemu=qemu_path, timeout=120, **options))  # type: ignore[arg-type]


# -- booting as on Nitro ----------------------------------------------------------------------------------
def test_the_demo_boots_with_its_production_cmdline_and_the_heartbeat_answered(
    demo_eif: Path, nitro_qemu: str
) -> None:
    result = _boot(demo_eif, nitro_qemu)
    assert (result.ok, result.reason) == (True, "shutdown"), result.console
    assert result.notes == ("-M nitro-enclave", "heartbeat answered")
    assert HELLO_LINE in result.console
    assert "eifbuild-init: local run" not in result.console  # the heartbeat was real, not skipped
    cmdline = (KERNEL_DIR / "cmdline").read_text().strip()
    assert f"Command line: {cmdline} reboot=t panic=-1" in result.console
    assert "eifbuild.local=1" not in result.console


def test_the_cli_verdict_names_the_machine(
    demo_eif: Path, nitro_qemu: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["boot", str(demo_eif), "--qemu", nitro_qemu, "--expect", HELLO_LINE, "--timeout", "120"]
    assert main([*args, "--cache", str(tmp_path / "store")]) == 0
    verdict = capsys.readouterr().out.splitlines()[-1]
    assert verdict.startswith(f"PASS: saw {HELLO_LINE!r} (")
    assert verdict.endswith(" s, -M nitro-enclave, heartbeat answered)")


def test_microvm_stays_available(demo_eif: Path, nitro_qemu: str) -> None:
    result = _boot(demo_eif, nitro_qemu, machine="microvm")
    assert (result.ok, result.notes) == (True, ("-M microvm",)), result.console
    assert "eifbuild-init: local run (eifbuild.local=1)" in result.console


# -- negative controls ----------------------------------------------------------------------------------
def test_one_flipped_byte_is_refused_by_qemu_s_crc_check(
    demo_eif: Path, nitro_qemu: str, tmp_path: Path
) -> None:
    data = bytearray(demo_eif.read_bytes())
    data[len(data) // 2] ^= 0x01
    flipped = tmp_path / "flipped.eif"
    flipped.write_bytes(bytes(data))
    result = _boot(flipped, nitro_qemu)
    assert (result.ok, result.reason) == (False, "exited"), result.console
    assert "CRC mismatch" in result.detail
    assert result.detail.endswith("; the enclave sent no heartbeat (vsock CID 3 port 9000)")


def test_an_init_that_never_sends_the_heartbeat_fails(
    shared_store: Store, nitro_qemu: str, tmp_path: Path
) -> None:
    silent = _compile(shared_store, tmp_path, SILENT_INIT_C, "silent-init")
    eif = _eif(tmp_path, bootstrap_entries(silent), _hello_app(shared_store))
    timed = boot.boot_eif(eif, boot.BootOptions(qemu=nitro_qemu, timeout=15))
    assert (timed.ok, timed.reason) == (False, "timeout"), timed.console
    assert timed.detail == "timed out after 15 s; the enclave sent no heartbeat (vsock CID 3 port 9000)"
    assert "silent init: no heartbeat" in timed.console
    seen = _boot(eif, nitro_qemu, expect="silent init")
    assert (seen.ok, seen.reason) == (False, "no-heartbeat"), seen.console
    assert seen.verdict.startswith(
        "FAIL: saw 'silent init', but the enclave sent no heartbeat (vsock CID 3 port 9000) ("
    )


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rpartition(")")[2].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_a_terminated_boot_stops_its_qemu(
    shared_store: Store, nitro_qemu: str, tmp_path: Path, signum: int
) -> None:
    """SIGTERM or SIGHUP to `eifbuild boot` stops QEMU too (it was left running: issue #26's trial)."""
    waiting = _compile(shared_store, tmp_path, SILENT_INIT_C, "waiting-app")
    app = app_entries([], ["/bin/waiting"], {}, files={"bin/waiting": waiting})
    eif = _eif(tmp_path, bootstrap_entries(_init(shared_store)), app)
    argv = [sys.executable, "-m", "eifbuild", "boot", str(eif), "--qemu", nitro_qemu, "--timeout", "300"]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # the app runs: QEMU is up and will stay up
            if "silent init: no heartbeat" in line:
                break
        qemus = [c for c in _children(proc.pid) if "qemu" in Path(f"/proc/{c}/cmdline").read_text()]
        assert qemus, "no QEMU child"
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 128 + signal.SIGTERM
    assert err.splitlines()[-1] == "error: terminated"
    assert not any(Path(f"/proc/{pid}").exists() for pid in qemus)


# -- vsock to the host ----------------------------------------------------------------------------------
@pytest.fixture
def pong_server() -> Iterator[int]:
    server = socket.create_server(("127.0.0.1", 0))
    received: list[bytes] = []

    def serve() -> None:
        conn, _ = server.accept()
        with conn:
            received.append(conn.recv(100))
            conn.sendall(b"pong")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    thread.join(5)
    server.close()
    assert received == [b"ping from the enclave\n"]


def test_an_app_talks_to_the_host_through_vsock_forward(
    shared_store: Store, nitro_qemu: str, tmp_path: Path, pong_server: int
) -> None:
    client = _compile(shared_store, tmp_path, VSOCK_CLIENT_C, "vsock-client")
    app = app_entries([], ["/bin/client"], {}, files={"bin/client": client})
    eif = _eif(tmp_path, bootstrap_entries(_init(shared_store)), app)
    result = _boot(eif, nitro_qemu, vsock_forwards=(f"5000=tcp:127.0.0.1:{pong_server}",))
    assert (result.ok, result.reason) == (True, "shutdown"), result.console
    assert "host said: pong" in result.console


# -- --attest -------------------------------------------------------------------------------------------
@pytest.mark.skipif(DEMO_HAS_NSM, reason="the demo kernel has the NSM driver")
def test_attest_without_an_nsm_driver_says_so(demo_eif: Path, nitro_qemu: str) -> None:
    result = _boot(demo_eif, nitro_qemu, attest=True)
    assert (result.ok, result.reason) == (False, "attest"), result.console
    assert result.detail.startswith(
        "attestation impossible: the guest has no NSM device "
        "(unavailable: open /dev/nsm: No such file or directory) (the machine shut down)"
    )


UNSIGNED = "chain and signature not checked: QEMU's NSM does not sign"


@needs_nsm
def test_attest_passes_on_the_demo(demo_eif: Path, nitro_qemu: str) -> None:
    result = _boot(demo_eif, nitro_qemu, attest=True)
    assert result.ok, result.console
    assert result.notes[-2:] == (
        "attested: PCR0, PCR1, PCR2 equal the EIF's and are locked",
        f"document verified (PCR0, PCR1, PCR2, nonce; {UNSIGNED})",
    )
    assert result.nonce is not None
    assert f"eifbuild.nonce={result.nonce.hex()}" in result.console  # after the measured cmdline
    assert result.document is not None
    again = _boot(demo_eif, nitro_qemu, attest=True)
    assert again.ok, again.console
    assert again.nonce != result.nonce  # a fresh nonce per boot


@needs_nsm
def test_the_saved_document_verifies_with_the_eif_s_pcrs_and_the_nonce_only(
    demo_eif: Path, shared_store: Store, nitro_qemu: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    doc = tmp_path / "att.cbor"
    args = ["boot", str(demo_eif), "--qemu", nitro_qemu, "--attest", "--attestation-out", str(doc)]
    assert main([*args, "--timeout", "120", "--cache", str(tmp_path / "store")]) == 0
    out = capsys.readouterr().out.splitlines()
    nonce = next(line for line in out if line.startswith("attest: nonce ")).split()[-1]
    assert f"attest: document saved to {doc} ({doc.stat().st_size} bytes)" in out
    assert out[-1].startswith("PASS: the machine shut down (")
    assert out[-1].endswith(f", document verified (PCR0, PCR1, PCR2, nonce; {UNSIGNED}))")
    pcrs = tmp_path / "demo.pcr.json"
    assert main(["pcrs", str(demo_eif), "--pcrs-out", str(pcrs)]) == 0
    app = app_entries(
        [], ["/bin/hello"], {"HELLO_NAME": "another"}, files={"bin/hello": _hello_bin(shared_store)}
    )
    other = _eif(tmp_path, bootstrap_entries(_init(shared_store)), app, name="other")
    other_pcrs = tmp_path / "other.pcr.json"
    assert main(["pcrs", str(other), "--pcrs-out", str(other_pcrs)]) == 0
    capsys.readouterr()

    def verify(*extra: str) -> tuple[int, str]:
        code = main(["attestation", "verify", str(doc), "--insecure-emulator", *extra])
        return code, capsys.readouterr().out

    code, text = verify("--pcrs", str(pcrs), "--nonce", nonce)
    assert code == 0, text
    assert text.startswith("verified: eifbuild-boot, made ")
    assert "checked: structure, PCR0, PCR1, PCR2, nonce" in text
    assert "insecure: chain and signature skipped (--insecure-emulator): this proves nothing" in text
    code, text = verify("--pcrs", str(other_pcrs), "--nonce", nonce)
    assert (code, text.split(":")[:2]) == (1, ["not verified", " policy.pcr"])
    code, text = verify("--pcrs", str(pcrs), "--nonce", "00" * 32)
    assert (code, text.split(":")[:2]) == (1, ["not verified", " policy.nonce"])
    code = main(["attestation", "verify", str(doc), "--pcrs", str(pcrs), "--nonce", nonce])
    text = capsys.readouterr().out
    assert code == 1
    assert text.startswith("not verified: structure.emulator: alg -1, a zero signature, a zero certificate")


@needs_nsm
def test_attest_passes_for_a_signed_eif_with_pcr8(
    shared_store: Store, nitro_qemu: str, tmp_path: Path
) -> None:
    key = ec.generate_private_key(ec.SECP384R1())
    signer = PemSigner.from_files(
        certificate_for(key.public_key(), tmp_path / "cert.pem"), pem_key(key, tmp_path / "key.pem")
    )
    eif = _eif(tmp_path, bootstrap_entries(_init(shared_store)), _hello_app(shared_store), signer=signer)
    result = _boot(eif, nitro_qemu, attest=True)
    assert result.ok, result.console
    assert result.notes[-2:] == (
        "attested: PCR0, PCR1, PCR2, PCR8 equal the EIF's and are locked",
        f"document verified (PCR0, PCR1, PCR2, PCR8, nonce; {UNSIGNED})",
    )


@needs_nsm
def test_an_extra_measured_initrd_moves_pcr0_and_pcr2(
    demo_eif: Path, nitro_qemu: str, tmp_path: Path
) -> None:
    extra = tmp_path / "extra.cpio"
    write_cpio_file([Entry.file("extra", b"not in the EIF\n")], extra, mtime=0)
    result = _boot(demo_eif, nitro_qemu, attest=True, extra_initrd=extra)
    assert (result.ok, result.reason) == (False, "attest"), result.console
    assert result.detail.startswith("attestation failed: PCR0, PCR2 differ from the EIF's (")
