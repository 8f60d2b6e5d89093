"""``eifbuild diff`` and ``eifbuild extract``: pairs of EIFs that differ in exactly one thing, bad
input, safe unpacking, and the extract → pack (→ sign) round trip on every eif_build vector."""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import shutil
import stat
import subprocess
import sys
import tracemalloc
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import IO

import pytest
from conftest import VECTORS, require_tool
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID

from eifbuild import cli
from eifbuild.eif import (
    HEADER_SIZE,
    SECTION_HEADER_SIZE,
    PackRequest,
    SectionType,
    measure,
    pack,
    parse_build_time,
    read_eif,
)
from eifbuild.eif.reader import read_section
from eifbuild.eif.sign import PemSigner
from eifbuild.errors import ArchiveError
from eifbuild.inspect import diff_files, extract
from eifbuild.inspect.diff import DiffResult
from eifbuild.ramdisk import Entry, app_entries, bootstrap_entries, write_cpio_file
from eifbuild.util.fsutil import StreamHasher

Capture = pytest.CaptureFixture[str]
INPUTS = VECTORS / "inputs"
KEY = INPUTS / "sign_key.pem"
CMDLINE = "reboot=k panic=30 pci=off nomodules console=ttyS0"
BUILD_TIME = "2024-01-02T03:04:05+00:00"


@dataclass(frozen=True)
class Spec:
    """What goes into a test EIF; each test pair changes one field."""

    conf: bytes = b"listen=80\n" * 50
    conf_mode: int = 0o644
    cmd: tuple[str, ...] = ("/bin/app", "--port", "80")
    env: tuple[tuple[str, str], ...] = (("MODE", "prod"), ("TZ", "UTC"))
    cmdline: str = CMDLINE
    kernel: bytes = b""  # empty: the vectors' bzImage
    certificate: str | None = None  # "a" or "b": two certificates for the vectors' key
    build_time: str = BUILD_TIME
    app_compression: str = "none"
    gnu_order: tuple[str, ...] = ()  # build the app ramdisk with GNU cpio, members in this order
    extra: tuple[Entry, ...] = field(default_factory=tuple)


def _rootfs(spec: Spec) -> list[Entry]:
    return [
        Entry.directory("etc"),
        Entry.directory("etc/app"),
        Entry.directory("etc/app/conf.d"),
        Entry.file("etc/app/conf.d/app.conf", spec.conf, mode=spec.conf_mode),
        Entry.directory("bin"),
        Entry.file("bin/app", b"\x7fELF" + bytes(range(256)) * 8, mode=0o755),
        Entry.symlink("bin/sh", "app"),
        *spec.extra,
    ]


def _certificate(tmp_path: Path, which: str) -> Path:
    if which == "a":
        return INPUTS / "sign_cert.pem"
    key = serialization.load_pem_private_key(KEY.read_bytes(), None)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"eifbuild-test-{which}")])
    now = datetime.now(timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())  # type: ignore[arg-type]
        .serial_number(42)
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .sign(key, hashes.SHA384())  # type: ignore[arg-type]
    )
    path = tmp_path / f"cert-{which}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _gnu_app_ramdisk(spec: Spec, work: Path, out: Path) -> None:
    """The app ramdisk made by GNU cpio from a real tree, members in ``spec.gnu_order``."""
    cpio = require_tool("cpio")
    tree = work / "tree"
    (tree / "rootfs/etc").mkdir(parents=True)
    (tree / "cmd").write_text("".join(f"{a}\n" for a in spec.cmd))
    (tree / "env").write_text("".join(f"{k}={v}\n" for k, v in spec.env))
    (tree / "rootfs/etc/app.conf").write_bytes(spec.conf)
    (tree / "rootfs/etc/motd").write_bytes(b"hello\n")
    for path in [*tree.rglob("*"), tree]:
        os.utime(path, (0, 0))
    names = "".join(f"{name}\n" for name in spec.gnu_order).encode()
    with out.open("wb") as fh:
        subprocess.run(
            [cpio, "-o", "-H", "newc", "-R", "+0:+0", "--reproducible", "--quiet"],
            input=names, stdout=fh, cwd=tree, check=True,
        )  # fmt: skip


def build_eif(tmp_path: Path, name: str, spec: Spec) -> Path:
    work = tmp_path / name
    work.mkdir()
    boot, app = work / "boot.cpio", work / "app.cpio"
    write_cpio_file(bootstrap_entries(b"\x7fELF-init", b"nsm-module"), boot, mtime=0)
    if spec.gnu_order:
        _gnu_app_ramdisk(spec, work, app)
    else:
        entries = app_entries(_rootfs(spec), list(spec.cmd), dict(spec.env), modes="preserve")
        write_cpio_file(entries, app, mtime=0, compression=spec.app_compression)  # type: ignore[arg-type]
    kernel = INPUTS / "bzImage"
    if spec.kernel:
        kernel = work / "bzImage"
        kernel.write_bytes(spec.kernel)
    signer = None
    if spec.certificate:
        signer = PemSigner.from_files(_certificate(tmp_path, spec.certificate), KEY)
    out = tmp_path / f"{name}.eif"
    pack(
        PackRequest(
            output=out, kernel=kernel, cmdline=spec.cmdline, ramdisks=[boot, app], arch="x86_64",
            name="app", version="1.0", build_time=parse_build_time(spec.build_time), signer=signer,
        )
    )  # fmt: skip
    return out


def _diff_json(a: Path, b: Path, capsys: Capture) -> tuple[int, dict[str, object]]:
    code = cli.main(["diff", "--json", str(a), str(b)])
    return code, json.loads(capsys.readouterr().out)


def _flipped_kernel() -> bytes:
    data = bytearray((INPUTS / "bzImage").read_bytes())
    data[-1000] ^= 1
    return bytes(data)


# (name, the base spec, the changed spec, the `where`s expected, the PCRs expected, a detail word)
ONE_THING = [
    ("rootfs byte", Spec(), Spec(conf=b"listen=80\n" * 49 + b"listen=81\n"),
     {"ramdisk[1]:rootfs/etc/app/conf.d/app.conf"}, ["PCR0", "PCR2"], "content sha256"),
    ("mode bit", Spec(), Spec(conf_mode=0o664), {"ramdisk[1]:rootfs/etc/app/conf.d/app.conf"},
     ["PCR0", "PCR2"], "mode 0644 → 0664"),
    ("env var", Spec(), Spec(env=(("MODE", "dev"), ("TZ", "UTC"))), {"ramdisk[1]:env"},
     ["PCR0", "PCR2"], "MODE 'prod' → 'dev'"),
    ("cmd argument", Spec(), Spec(cmd=("/bin/app", "--port", "8080")), {"ramdisk[1]:cmd"},
     ["PCR0", "PCR2"], "argv[2] '80' → '8080'"),
    ("cmdline", Spec(), Spec(cmdline=CMDLINE.replace("panic=30", "panic=5")), {"cmdline"},
     ["PCR0", "PCR1"], "added 'panic=5'"),
    ("kernel", Spec(), Spec(kernel=_flipped_kernel()), {"kernel"}, ["PCR0", "PCR1"], "same size"),
    ("certificate", Spec(certificate="a"), Spec(certificate="b"), {"signature.certificate"},
     ["PCR8"], "subject"),
    ("build time", Spec(), Spec(build_time="2025-01-01T00:00:00+00:00"), {"metadata.BuildTime"},
     [], "2025"),
    ("member order", Spec(gnu_order=("cmd", "env", "rootfs", "rootfs/etc", "rootfs/etc/app.conf", "rootfs/etc/motd")),
     Spec(gnu_order=("cmd", "env", "rootfs", "rootfs/etc", "rootfs/etc/motd", "rootfs/etc/app.conf")),
     {"ramdisk[1]"}, ["PCR0", "PCR2"], "member order differs"),
    ("gzip", Spec(), Spec(app_compression="gzip"), {"ramdisk[1]"}, ["PCR0", "PCR2"],
     "compression none → gzip (the same cpio archive inside)"),
    ("symlink target", Spec(), Spec(extra=(Entry.symlink("bin/ash", "app"),)), {"ramdisk[1]:rootfs/bin/ash"},
     ["PCR0", "PCR2"], "added: symlink"),
]  # fmt: skip


@pytest.mark.parametrize("case", ONE_THING, ids=[c[0] for c in ONE_THING])
def test_diff_names_the_one_change_and_only_the_pcrs_it_moves(
    tmp_path: Path, capsys: Capture, case: tuple[str, Spec, Spec, set[str], list[str], str]
) -> None:
    _, base, changed, wheres, pcrs, word = case
    a, b = build_eif(tmp_path, "a", base), build_eif(tmp_path, "b", changed)
    code, report = _diff_json(a, b, capsys)
    assert code == 1
    assert report["identical"] is False
    assert report["pcrs"] == pcrs
    changes = report["changes"]
    assert isinstance(changes, list)
    assert {c["where"] for c in changes} == wheres, changes
    for change in changes:
        assert set(change["pcrs"]) <= set(pcrs), change
        assert change["measured"] == bool(change["pcrs"])
    assert any(word in c["detail"] for c in changes), changes
    assert set().union(*(c["pcrs"] for c in changes)) == set(pcrs)  # and every moved PCR is explained


def test_diff_identical_and_text_report(tmp_path: Path, capsys: Capture) -> None:
    a = build_eif(tmp_path, "a", Spec())
    b = build_eif(
        tmp_path, "b", Spec(env=(("MODE", "dev"), ("TZ", "UTC")), build_time="2025-01-01T00:00:00Z")
    )
    assert cli.main(["diff", str(a), str(a)]) == 0
    assert capsys.readouterr().out == f"{a} and {a} are identical\n"
    assert cli.main(["diff", str(a), str(b)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "PCRs that differ (sha384): PCR0, PCR2"
    measured, unmeasured = lines.index("measured changes:"), lines.index("not measured (no PCR changes):")
    assert lines[measured + 1] == "  ramdisk[1]:env [PCR0 PCR2]: MODE 'prod' → 'dev'"
    assert lines[unmeasured + 1].startswith("  metadata.BuildTime: '2024-01-02T03:04:05+00:00' → ")
    assert measured < unmeasured


def test_diff_signed_against_unsigned_and_same_certificate(tmp_path: Path) -> None:
    plain = build_eif(tmp_path, "plain", Spec())
    signed = build_eif(tmp_path, "signed", Spec(certificate="a"))
    result = diff_files(plain, signed, "sha384")
    assert result.pcrs == ("PCR8",)
    assert [(c.where, c.pcrs) for c in result.changes] == [("signature", ("PCR8",)), ("sections", ())]
    other_env = build_eif(tmp_path, "env", Spec(certificate="a", env=(("MODE", "x"),)))
    result = diff_files(signed, other_env, "sha384")
    assert result.pcrs == ("PCR0", "PCR2")
    signature = [c for c in result.changes if c.where == "signature"]
    assert signature[0].detail == "same certificate; it signs a different PCR0"
    assert not signature[0].measured


def test_diff_eifbuild_input_digests_name_the_input(tmp_path: Path) -> None:
    a, b = build_eif(tmp_path, "a", Spec()), build_eif(tmp_path, "b", Spec())
    for path, digest in ((a, "1" * 64), (b, "2" * 64)):
        custom = {"eifbuild": {"inputs": {"kernel": "k" * 64, "ramdisk/1": digest}}}
        image = read_eif(path)
        _repack(path, custom, image.metadata.build_time if image.metadata else BUILD_TIME)
    changes = diff_files(a, b, "sha384").changes
    assert [c.where for c in changes] == ["metadata.CustomMetadata.eifbuild.inputs.ramdisk/1"]
    assert changes[0].detail.startswith("eifbuild input 'ramdisk/1' changed: '1111")


def _repack(path: Path, custom: dict[str, object], build_time: str) -> None:
    out = path.parent / f"{path.stem}-parts"
    extract(path, out)
    image = read_eif(path)
    pack(
        PackRequest(
            output=path, kernel=out / "kernel", cmdline=image.cmdline,
            ramdisks=[out / "ramdisk-0.cpio", out / "ramdisk-1.cpio"], arch="x86_64", name="app",
            version="1.0", build_time=parse_build_time(build_time), custom=custom,  # type: ignore[arg-type]
        )
    )  # fmt: skip


def test_diff_file_level_fields(tmp_path: Path) -> None:
    base = Spec(
        extra=(Entry.device("dev/console", "char", 5, 1), Entry.file("a", b"x"), Entry.hardlink("b", "a"))
    )
    changed = Spec(
        extra=(Entry.device("dev/console", "char", 5, 2), Entry.file("a", b"x"), Entry.file("b", b"x"))
    )
    result = diff_files(build_eif(tmp_path, "a", base), build_eif(tmp_path, "b", changed), "sha384")
    details = {c.where: c.detail for c in result.changes}
    assert details["ramdisk[1]:rootfs/dev/console"] == "device numbers 5,1 → 5,2"
    assert details["ramdisk[1]:rootfs/b"] == "hard-link group [rootfs/a] → []"
    assert details["ramdisk[1]:rootfs/a"] == "hard-link group [rootfs/b] → []"


# ---------------------------------------------------------------------------------------------
# bad input


def _corrupt_ramdisk(tmp_path: Path, name: str, data: bytes) -> Path:
    """An EIF whose app ramdisk is ``data`` (packed as is)."""
    ramdisk = tmp_path / f"{name}.img"
    ramdisk.write_bytes(data)
    out = tmp_path / f"{name}.eif"
    pack(PackRequest(output=out, kernel=INPUTS / "bzImage", cmdline="x", ramdisks=[ramdisk], arch="x86_64"))
    return out


def test_bad_input_is_one_error_line(tmp_path: Path, capsys: Capture) -> None:
    good = build_eif(tmp_path, "good", Spec())
    not_eif = tmp_path / "notes.txt"
    not_eif.write_text("hello\n" * 100)
    truncated = tmp_path / "truncated.eif"
    truncated.write_bytes(good.read_bytes()[:-100])
    cpio = (tmp_path / "good" / "app.cpio").read_bytes()
    zipped = bytearray(gzip.compress(cpio, mtime=0))
    zipped[-8] ^= 1  # the CRC-32 of the uncompressed data
    bad_gzip = _corrupt_ramdisk(tmp_path, "badgzip", bytes(zipped))
    bad_cpio = _corrupt_ramdisk(tmp_path, "badcpio", cpio[:300] + b"0707zz" + cpio[306:])
    cases = [
        (not_eif, "not an EIF file"),
        (truncated, "past the end of the file"),
        (bad_gzip, "ramdisk[0]: corrupt gzip stream: CRC check failed"),
        (bad_cpio, "ramdisk[0]"),
    ]
    for path, words in cases:
        assert cli.main(["diff", str(good), str(path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1, err
        assert err[0].startswith(f"error: {path}"), err
        assert words in err[0], err


def test_diff_memory_is_bounded_by_chunks_not_ramdisk_size(tmp_path: Path) -> None:
    big = tmp_path / "big.bin"
    with big.open("wb") as fh:
        for i in range(48):
            fh.write(bytes([i]) * (1 << 20))
    spec = Spec(extra=(Entry.file("big.bin", big),))
    a = build_eif(tmp_path, "a", spec)
    b = build_eif(tmp_path, "b", dataclasses.replace(spec, conf=b"other"))
    tracemalloc.start()
    try:
        result = diff_files(a, b, "sha384")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [c.where for c in result.changes] == ["ramdisk[1]:rootfs/etc/app/conf.d/app.conf"]
    assert peak < 12 << 20, peak


class _CountingFile:
    """A file whose reads add up the bytes they return under its path."""

    def __init__(self, fh: IO[bytes], path: Path, counts: Counter[Path]) -> None:
        self._fh, self._path, self._counts = fh, path, counts

    def read(self, size: int = -1, /) -> bytes:
        data = self._fh.read(size)
        self._counts[self._path] += len(data)
        return data

    def __getattr__(self, name: str) -> object:
        return getattr(self._fh, name)

    def __enter__(self) -> _CountingFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self._fh.close()


def _bytes_read_by_diff(
    a: Path, b: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[Counter[Path], DiffResult]:
    counts: Counter[Path] = Counter()
    real_open = Path.open

    def counting_open(self: Path, *args: object, **kwargs: object) -> object:
        fh = real_open(self, *args, **kwargs)  # type: ignore[call-overload]
        return _CountingFile(fh, self, counts) if self.suffix == ".eif" else fh

    with monkeypatch.context() as patch:
        patch.setattr(Path, "open", counting_open)
        result = diff_files(a, b, "sha384")
    return counts, result


def _read_once(eif: Path, counts: Counter[Path]) -> bool:
    """Whether ``eif``'s bytes were read once: its size, plus at most what read_eif reads (the
    headers and the small sections, which the pass then reads again)."""
    image = read_eif(eif)
    small = sum(s.size for s in image.sections if s.type not in (SectionType.KERNEL, SectionType.RAMDISK))
    size = eif.stat().st_size
    return size <= counts[eif] <= size + HEADER_SIZE + SECTION_HEADER_SIZE * len(image.sections) + small


def test_diff_reads_each_eif_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a = build_eif(tmp_path, "a", Spec(app_compression="gzip"))
    b = build_eif(tmp_path, "b", Spec(app_compression="gzip", conf=b"listen=81\n" * 50))  # same size
    counts, result = _bytes_read_by_diff(a, b, monkeypatch)
    assert set(counts) == {a, b}
    assert _read_once(a, counts), counts
    assert _read_once(b, counts), counts
    assert [c.where for c in result.changes] == ["ramdisk[1]:rootfs/etc/app/conf.d/app.conf"]
    assert result.measurements == (measure(a).pcrs(), measure(b).pcrs())
    copy = tmp_path / "copy.eif"
    shutil.copyfile(a, copy)
    counts, result = _bytes_read_by_diff(a, copy, monkeypatch)
    assert _read_once(a, counts), counts
    assert _read_once(copy, counts), counts
    assert result.identical


def test_diff_of_identical_files_ignores_what_their_ramdisks_hold(tmp_path: Path) -> None:
    """Identical bytes are identical even when a ramdisk cannot be read; a differing file with such a
    ramdisk is an error, the first file's first."""
    bad = _corrupt_ramdisk(tmp_path, "bad", b"0707zz" + bytes(200))
    copy = tmp_path / "copy.eif"
    shutil.copyfile(bad, copy)
    assert diff_files(bad, copy, "sha384").identical
    with pytest.raises(ArchiveError, match="ramdisk\\[0\\]") as caught:
        diff_files(bad, tmp_path / "missing.eif", "sha384")
    assert caught.value.path == f"{bad}, ramdisk[0]"


# ---------------------------------------------------------------------------------------------
# extract


def _rebuild(directory: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> Path:
    manifest = json.loads((directory / "manifest.json").read_text())
    monkeypatch.chdir(directory)
    assert cli.main(["-q", *manifest["pack"]]) == 0
    capsys.readouterr()
    return directory / "rebuilt.eif"


VECTOR_EIFS = sorted(p.parent.name for p in VECTORS.glob("*/expected.eif"))


@pytest.mark.parametrize("case", VECTOR_EIFS)
def test_extract_then_pack_rebuilds_every_vector(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    original = VECTORS / case / "expected.eif"
    result = extract(original, tmp_path / "x")
    assert result.differences == []
    rebuilt = _rebuild(tmp_path / "x", monkeypatch, capsys)
    image = read_eif(original)
    if not image.is_signed:
        assert rebuilt.read_bytes() == original.read_bytes()
        return
    # eif_build's ECDSA is randomised: sign again with the vector's key, compare all but the signature
    signature = result.manifest["signature"]
    assert isinstance(signature, dict)
    sign = [str(a) for a in signature["sign"]]
    assert cli.main(["-q", *sign[:-1], str(KEY)]) == 0
    capsys.readouterr()
    assert measure(rebuilt) == measure(original)
    ours = read_eif(rebuilt)
    assert [s.type for s in ours.sections] == [s.type for s in image.sections]
    assert ours.sections[-1].type == SectionType.SIGNATURE
    for mine, theirs in zip(ours.sections[:-1], image.sections[:-1], strict=True):
        assert read_section(ours, mine) == read_section(image, theirs)
    assert (
        rebuilt.read_bytes()[548 : ours.sections[-1].offset]
        == original.read_bytes()[548 : image.sections[-1].offset]
    )


def test_extract_of_a_signed_eif_lets_sign_restore_the_same_bytes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    original = build_eif(tmp_path, "signed", Spec(certificate="b", app_compression="gzip"))
    out = tmp_path / "x"
    assert cli.main(["-q", "extract", str(original), "-o", str(out)]) == 0
    capsys.readouterr()
    assert sorted(p.name for p in out.iterdir()) == [
        "cmdline", "kernel", "manifest.json", "metadata.json", "ramdisk-0.cpio", "ramdisk-1.cpio.gz",
        "signature-section.cbor", "signature.cose", "signing-certificate.pem",
    ]  # fmt: skip
    rebuilt = _rebuild(out, monkeypatch, capsys)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["signature"]["subject"] == "CN=eifbuild-test-b"
    assert cli.main(["-q", *manifest["signature"]["sign"][:-1], str(KEY)]) == 0
    capsys.readouterr()
    assert rebuilt.read_bytes() == original.read_bytes()


def test_extract_unpack_writes_the_tree(tmp_path: Path) -> None:
    spec = Spec(extra=(Entry.device("dev/console", "char", 5, 1), Entry.fifo("run/pipe"),
                       Entry.file("a", b"linked"), Entry.hardlink("b", "a")))  # fmt: skip
    eif = build_eif(tmp_path, "a", spec)
    result = extract(eif, tmp_path / "x", unpack=True)
    tree = tmp_path / "x" / "ramdisk-1"
    assert (tree / "cmd").read_text() == "/bin/app\n--port\n80\n"
    assert (tree / "rootfs/etc/app/conf.d/app.conf").read_bytes() == spec.conf
    assert os.readlink(tree / "rootfs/bin/sh") == "app"
    assert (tree / "rootfs/bin/app").stat().st_mode & 0o777 == 0o755
    assert os.path.samefile(tree / "rootfs/a", tree / "rootfs/b")
    assert not (tree / "rootfs/dev/console").exists()
    assert not (tree / "rootfs/run/pipe").exists()
    unpacked = result.manifest["unpacked"]
    assert isinstance(unpacked, list)
    listed = {(e["path"], e["type"]) for e in unpacked[1]["not_created"]}
    assert listed == {("rootfs/dev/console", "char device"), ("rootfs/run/pipe", "fifo")}


def test_extract_unpack_hashes_each_section_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The manifest's sha256 of each section is all the hashing: unpacking a ramdisk hashes neither
    its bytes again nor its cpio stream nor its members."""
    eif = build_eif(tmp_path, "a", Spec(app_compression="gzip"))
    hashed = 0
    real_update = StreamHasher.update

    def counting_update(self: StreamHasher, data: bytes) -> None:
        nonlocal hashed
        hashed += len(data) * len(self.algorithms)
        real_update(self, data)

    monkeypatch.setattr(StreamHasher, "update", counting_update)
    extract(eif, tmp_path / "x", unpack=True)
    assert hashed == sum(s.size for s in read_eif(eif).sections)


def _newc(*members: tuple[str, int, bytes]) -> bytes:
    """A raw newc archive (no checks: it may hold what eifbuild's writer refuses)."""
    out = b""
    for ino, (name, mode, data) in enumerate([*members, ("TRAILER!!!", 0, b"")], 1):
        raw = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + raw
        out += bytes(-len(out) % 4) + data + bytes(-len(data) % 4)
    return out


@pytest.mark.parametrize(
    ("members", "words"),
    [
        ([("../escape", 0o100644, b"x")], "climbs out of the tree"),
        ([("a/../../escape", 0o100644, b"x")], "climbs out of the tree"),
        ([("link", 0o120777, b"/tmp"), ("link/evil", 0o100644, b"x")], "parent 'link' is a symlink"),
        ([("link", 0o120777, b"."), ("link/evil", 0o100644, b"x")], "parent 'link' is a symlink"),
    ],
)
def test_unpack_refuses_paths_that_escape(
    tmp_path: Path, capsys: Capture, members: list[tuple[str, int, bytes]], words: str
) -> None:
    eif = _corrupt_ramdisk(tmp_path, "evil", _newc(*members))
    assert cli.main(["extract", str(eif), "-o", str(tmp_path / "x"), "--unpack"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {eif}, ramdisk[0], member "), err
    assert words in err, err
    assert not (tmp_path / "escape").exists()
    assert not Path("/tmp/evil").exists()


def _hostile_ramdisk() -> bytes:
    """A root-owned setuid shell and /dev/mem and /dev/sda nodes, as an untrusted EIF may carry."""
    out = b""
    members = [
        ("dev", 0o40755, b"", (0, 0)),
        ("dev/mem", 0o20666, b"", (1, 1)),
        ("dev/sda", 0o60666, b"", (8, 0)),
        ("bin", 0o40755, b"", (0, 0)),
        ("bin/rootshell", 0o104755, b"#!/bin/sh\n", (0, 0)),
        ("TRAILER!!!", 0, b"", (0, 0)),
    ]
    for ino, (name, mode, data, rdev) in enumerate(members, 1):
        raw = name.encode() + b"\0"
        fields = (ino, mode, 0, 0, 1, 0, len(data), 0, 0, *rdev, len(raw), 0)
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + raw
        out += bytes(-len(out) % 4) + data + bytes(-len(data) % 4)
    return out


def test_unpack_makes_no_device_node_or_setuid_file_unless_asked(tmp_path: Path, capsys: Capture) -> None:
    eif = _corrupt_ramdisk(tmp_path, "nodes", _hostile_ramdisk())
    assert cli.main(["extract", str(eif), "-o", str(tmp_path / "x"), "--unpack"]) == 0
    captured = capsys.readouterr()
    tree = tmp_path / "x" / "ramdisk-0"
    assert not os.path.lexists(tree / "dev/mem")
    assert not os.path.lexists(tree / "dev/sda")
    assert (tree / "bin/rootshell").stat().st_mode & 0o7777 == 0o755
    unpacked = json.loads((tmp_path / "x" / "manifest.json").read_text())["unpacked"][0]
    assert {(e["path"], e["type"]) for e in unpacked["not_created"]} == {
        ("dev/mem", "char device"),
        ("dev/sda", "block device"),
    }
    assert unpacked["special_bits_dropped"] == [
        {"path": "bin/rootshell", "what": "setuid/setgid bits of 4755"}
    ]
    assert "--preserve-special" in captured.err
    assert cli.main(["extract", str(eif), "-o", str(tmp_path / "y"), "--unpack", "--preserve-special"]) == 0
    tree = tmp_path / "y" / "ramdisk-0"
    assert (tree / "bin/rootshell").stat().st_mode & 0o7777 == 0o4755
    if os.geteuid() == 0:
        mem = os.lstat(tree / "dev/mem")
        assert stat.S_ISCHR(mem.st_mode)
        assert (os.major(mem.st_rdev), os.minor(mem.st_rdev), stat.S_IMODE(mem.st_mode)) == (1, 1, 0o666)
        assert stat.S_ISBLK(os.lstat(tree / "dev/sda").st_mode)


def test_unpack_places_absolute_names_inside(tmp_path: Path) -> None:
    eif = _corrupt_ramdisk(tmp_path, "abs", _newc(("/etc", 0o40755, b""), ("/etc/passwd", 0o100600, b"root")))
    extract(eif, tmp_path / "x", unpack=True)
    passwd = tmp_path / "x" / "ramdisk-0" / "etc" / "passwd"
    assert passwd.read_bytes() == b"root"
    assert passwd.stat().st_mode & 0o777 == 0o600


def test_extract_refuses_a_non_empty_directory(tmp_path: Path, capsys: Capture) -> None:
    eif = build_eif(tmp_path, "a", Spec())
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "keep").write_text("mine")
    assert cli.main(["extract", str(eif), "-o", str(tmp_path / "x")]) == 2
    assert "not empty" in capsys.readouterr().err


def test_cli_start_up_does_not_import_inspect() -> None:
    script = (
        "import sys; from eifbuild import cli; cli.build_parser(); print('eifbuild.inspect' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"


@pytest.mark.slow
def test_extract_then_pack_rebuilds_the_demo_eifs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    """The repo's demo, built by `doit eif` as tests/plan/test_demo.py does, survives extract → pack."""
    from test_demo import _copy_demo  # noqa: PLC0415 - the slow demo's helper, only here

    (tmp_path / "demo").mkdir()
    project = _copy_demo(tmp_path / "demo")
    env = {k: v for k, v in os.environ.items() if k not in {"EIFBUILD_CACHE", "SOURCE_DATE_EPOCH"}}
    done = subprocess.run([sys.executable, "-m", "doit", "eif"], cwd=project, env=env, capture_output=True,
                          text=True, check=False, timeout=1200)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    eifs = sorted((project / "build").glob("hello-*.eif"))
    assert len(eifs) == 2
    for eif in eifs:
        result = extract(eif, tmp_path / eif.stem, unpack=True)
        assert result.differences == []
        assert _rebuild(tmp_path / eif.stem, monkeypatch, capsys).read_bytes() == eif.read_bytes()
    across = diff_files(eifs[0], eifs[1], "sha384")
    assert {"kernel", "cmdline", "header.flags"} <= {c.where for c in across.changes}
