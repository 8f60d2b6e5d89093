"""The EIF writer, reader and measurements: spec worked example, round trips, CLI commands."""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from signing_helpers import certificate_for, pem_key

from eifbuild import cli
from eifbuild.arch import ARCHES, Arch
from eifbuild.eif import (
    EifMetadata,
    SectionType,
    describe,
    iter_section,
    measure,
    min_enclave_memory_mib,
    read_eif,
    verify,
)
from eifbuild.eif.pcr import HashAlgo, PcrHashers, crc32_combine, measure_bytes
from eifbuild.eif.reader import read_section
from eifbuild.eif.sign import PemSigner
from eifbuild.eif.writer import eif_sections, write_eif, write_sections
from eifbuild.errors import FileAccessError, InputError, LocatedError, UsageError

Capture = pytest.CaptureFixture[str]

# Spec §11: the worked example, computed and cross-checked against the Rust implementation.
DEMO_METADATA = EifMetadata("demo", "1.0", "1970-01-01T00:00:00+00:00")
DEMO_PCRS = {
    "PCR0": "8bc06a70dbd7a645287142be633fb5b69dba47158fdbaa1b56c83794dbd61e672558dffc7e7655bc5c31c1ba5fcc00f3",
    "PCR1": "6e37b98d2c46c98c1630f0bc35d86ee43577562c3f033e3659fc0a279d9c64dc1b16de25f838321106a94f057097e10e",
    "PCR2": "b7e6b5963d40235de9d60990a6bfb92ff0c32b1ec42bdb2b9aaea4e932f685c20dd922a21373e78abe083b91a716befb",
}
EMPTY_PCR2 = (
    "21b9efbc184807662e966d34f390821309eeac6802309798826296bf3e8bec7c10edb30948c90ba67310f7b964fc500a"
)


def _files(tmp_path: Path, **contents: bytes) -> dict[str, Path]:
    paths = {}
    for name, data in contents.items():
        paths[name] = tmp_path / name
        paths[name].write_bytes(data)
    return paths


def _demo(tmp_path: Path, arch: Arch = "x86_64") -> Path:
    f = _files(tmp_path, kernel=b"KERNEL", rd0=b"RD0", rd1=b"RD1-app")
    out = tmp_path / "demo.eif"
    write_eif(
        out,
        kernel=f["kernel"],
        cmdline="console=ttyS0",
        ramdisks=[f["rd0"], f["rd1"]],
        metadata=DEMO_METADATA,
        arch=arch,
    )
    return out


def test_worked_example_bytes_crc_and_pcrs(tmp_path: Path) -> None:
    out = _demo(tmp_path)
    data = out.read_bytes()
    assert len(data) == 875
    assert data[544:548] == bytes.fromhex("f4bbe29d")
    assert (
        hashlib.sha256(data).hexdigest() == "2b40d9d97b17ab091ce97bfe1bb300247af6dedbee6667f670f9f243e3e499b0"
    )
    assert zlib.crc32(data[:544] + data[548:]) == 0xF4BBE29D
    assert measure(out).pcrs() == DEMO_PCRS
    assert DEMO_METADATA.to_bytes() == (
        b'{"ImageName":"demo","ImageVersion":"1.0","BuildMetadata":{"BuildTime":"1970-01-01T00:00:00+00:00",'
        b'"BuildTool":"eif_build","BuildToolVersion":"0.3.1","OperatingSystem":"OS","KernelVersion":"kernel"},'
        b'"DockerInfo":null,"CustomMetadata":null}'
    )


def test_worked_example_aarch64_flag(tmp_path: Path) -> None:
    data = _demo(tmp_path, "aarch64").read_bytes()
    assert data[6:8] == b"\x00\x01"
    assert data[544:548] == bytes.fromhex("5ce61383")
    assert read_eif(tmp_path / "demo.eif").arch == "aarch64"


def test_write_returns_what_the_reader_measures_in_every_algorithm(tmp_path: Path) -> None:
    f = _files(tmp_path, kernel=b"KERNEL", rd0=b"RD0", rd1=b"RD1-app")
    for algo in ("sha256", "sha384", "sha512"):
        out = tmp_path / f"{algo}.eif"
        written = write_eif(
            out, kernel=f["kernel"], cmdline="console=ttyS0", ramdisks=[f["rd0"], f["rd1"]],
            metadata=DEMO_METADATA, arch="x86_64", algo=algo,
        )  # fmt: skip
        assert written == measure(out, algo)
        assert written.pcr0 == measure_bytes(b"KERNELconsole=ttyS0RD0RD1-app", algo)
    # --algo never changes the bytes (spec §5.1)
    assert (tmp_path / "sha256.eif").read_bytes() == (tmp_path / "sha512.eif").read_bytes()
    assert measure(tmp_path / "sha256.eif", "sha256").pcr0.startswith("b8bf9ad1")


@dataclass(frozen=True)
class Inputs:
    kernel: bytes
    cmdline: str
    ramdisks: list[bytes]
    arch: Arch
    name: str


INPUTS = st.builds(
    Inputs,
    kernel=st.binary(min_size=1, max_size=300),
    cmdline=st.text(st.characters(blacklist_characters="\0", blacklist_categories=["Cs"]), max_size=80),
    ramdisks=st.lists(st.binary(max_size=3000), min_size=1, max_size=5),
    arch=st.sampled_from(ARCHES),
    name=st.text(max_size=20),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=INPUTS, threaded=st.booleans())
def test_round_trip(tmp_path: Path, case: Inputs, threaded: bool) -> None:
    kernel, cmdline, ramdisks, arch, name = case.kernel, case.cmdline, case.ramdisks, case.arch, case.name
    paths = _files(tmp_path, kernel=kernel, **{f"rd{i}": data for i, data in enumerate(ramdisks)})
    metadata = EifMetadata(name, "v", "t", custom={"k": [1, 2.5, None]})
    out = tmp_path / "rt.eif"
    with mock.patch("eifbuild.eif.writer.parallel_hashing", return_value=threaded):
        written = write_eif(
            out,
            kernel=paths["kernel"],
            cmdline=cmdline,
            ramdisks=[paths[f"rd{i}"] for i in range(len(ramdisks))],
            metadata=metadata,
            arch=arch,
        )
    image = read_eif(out)
    assert [s.type for s in image.sections] == [
        SectionType.KERNEL,
        SectionType.CMDLINE,
        SectionType.METADATA,
        *[SectionType.RAMDISK] * len(ramdisks),
    ]
    assert read_section(image, image.kernel) == kernel
    assert image.cmdline == cmdline
    assert [read_section(image, s) for s in image.ramdisks] == ramdisks
    assert image.metadata == metadata
    assert image.arch == arch
    assert out.stat().st_size == 548 + sum(12 + s.size for s in image.sections)
    assert measure(image) == written
    assert written.pcr1 == measure_bytes(kernel + cmdline.encode() + ramdisks[0])
    assert written.pcr2 == measure_bytes(b"".join(ramdisks[1:]))
    assert verify(image) == []


def test_single_and_empty_ramdisks(tmp_path: Path) -> None:
    f = _files(tmp_path, kernel=b"K", empty=b"")
    out = tmp_path / "e.eif"
    m = write_eif(
        out, kernel=f["kernel"], cmdline="", ramdisks=[f["empty"]], metadata=DEMO_METADATA, arch="x86_64"
    )
    assert m.pcr2 == EMPTY_PCR2
    assert m.pcr0 == m.pcr1 == measure_bytes(b"K")
    assert read_section(read_eif(out), read_eif(out).ramdisks[0]) == b""


def test_iter_section_streams_in_chunks(tmp_path: Path) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    f = _files(tmp_path, kernel=b"K", rd=data)
    out = tmp_path / "big.eif"
    write_eif(out, kernel=f["kernel"], cmdline="c", ramdisks=[f["rd"]], metadata=DEMO_METADATA, arch="x86_64")
    image = read_eif(out)
    chunks = list(iter_section(image, image.ramdisks[0]))
    assert [len(c) for c in chunks] == [1 << 20] * 3 + [17]
    assert b"".join(chunks) == data


class _DiskFills(io.BytesIO):
    """An output whose writes fail once it would pass ``room`` bytes, as on a full disk."""

    def __init__(self, room: int) -> None:
        super().__init__()
        self.room = room

    def write(self, data: bytes) -> int:  # type: ignore[override]
        if self.tell() + len(data) > self.room:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return super().write(data)


@pytest.mark.parametrize("threaded", [False, True])
def test_a_failed_write_is_raised_in_the_caller(tmp_path: Path, threaded: bool) -> None:
    f = _files(tmp_path, kernel=os.urandom(3 << 20), rd=b"R")
    sections = eif_sections(kernel=f["kernel"], cmdline="c", ramdisks=[f["rd"]], metadata=DEMO_METADATA)
    with (
        mock.patch("eifbuild.eif.writer.parallel_hashing", return_value=threaded),
        pytest.raises(OSError, match="No space left on device"),
    ):
        write_sections(_DiskFills(2 << 20), sections, flags=0)


@pytest.mark.parametrize("sign", [False, True])
def test_threaded_and_plain_writers_write_the_same_bytes(tmp_path: Path, sign: bool) -> None:
    """Chunk boundaries, odd sizes and an empty ramdisk: the two-thread path changes no byte or PCR."""
    mib = 1 << 20
    f = _files(
        tmp_path, kernel=os.urandom(mib + 1), empty=b"", odd=os.urandom(2 * mib - 1), whole=os.urandom(mib)
    )
    ramdisks = [f["empty"], f["odd"], f["whole"], f["empty"]]
    signer = None
    if sign:
        key = ec.derive_private_key(7, ec.SECP384R1())
        cert = certificate_for(key.public_key(), tmp_path / "s.crt")
        signer = PemSigner.from_files(cert, pem_key(key, tmp_path / "s.key"))
    results = {}
    for threaded in (False, True):
        out = tmp_path / f"{threaded}.eif"
        with mock.patch("eifbuild.eif.writer.parallel_hashing", return_value=threaded):
            pcrs = write_eif(
                out, kernel=f["kernel"], cmdline="c", ramdisks=ramdisks, metadata=DEMO_METADATA,
                arch="x86_64", signer=signer,
            )  # fmt: skip
        results[threaded] = (out.read_bytes(), pcrs)
    assert results[True] == results[False]
    assert verify(read_eif(tmp_path / "True.eif")) == []


def test_a_failure_on_the_worker_thread_is_raised_and_leaves_no_output(tmp_path: Path) -> None:
    f = _files(tmp_path, kernel=os.urandom(3 << 20), rd=os.urandom(3 << 20))
    out = tmp_path / "w.eif"
    real = zlib.crc32
    worker_calls = []

    def crc32(data: bytes, value: int = 0) -> int:
        if threading.current_thread() is not threading.main_thread():
            worker_calls.append(len(data))
            if len(worker_calls) == 3:
                raise MemoryError("worker failed")
        return real(data, value)

    with (
        mock.patch("eifbuild.eif.writer.parallel_hashing", return_value=True),
        mock.patch("eifbuild.eif.writer.zlib.crc32", side_effect=crc32),
        pytest.raises(MemoryError, match="worker failed"),
    ):
        write_eif(
            out, kernel=f["kernel"], cmdline="c", ramdisks=[f["rd"]], metadata=DEMO_METADATA, arch="x86_64"
        )
    assert worker_calls  # the CRC did run on the worker
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kernel", "rd"]
    assert [t.name for t in threading.enumerate() if t.name == "pcr2"] == []


def test_failed_write_leaves_no_output(tmp_path: Path) -> None:
    f = _files(tmp_path, kernel=b"K")
    out = tmp_path / "x.eif"
    with pytest.raises(FileAccessError) as err:
        write_eif(
            out, kernel=f["kernel"], cmdline="c", ramdisks=[tmp_path / "missing"], metadata=DEMO_METADATA,
            arch="x86_64",
        )  # fmt: skip
    assert str(err.value) == f"{tmp_path / 'missing'}: cannot read ramdisk file: No such file or directory"
    assert list(tmp_path.iterdir()) == [f["kernel"]]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"ramdisks": []}, UsageError, "key 'ramdisk': at least one ramdisk is required"),
        ({"cmdline": "a\0b"}, InputError, "key 'cmdline': the kernel command line contains a NUL character"),
    ],
)
def test_writer_rejects_bad_arguments(
    tmp_path: Path, kwargs: dict[str, object], error: type[LocatedError], message: str
) -> None:
    f = _files(tmp_path, kernel=b"K", rd=b"R")
    args: dict[str, object] = {
        "kernel": f["kernel"], "cmdline": "c", "ramdisks": [f["rd"]], "metadata": DEMO_METADATA, "arch": "x86_64",
    }  # fmt: skip
    with pytest.raises(error) as err:
        write_eif(tmp_path / "x.eif", **(args | kwargs))  # type: ignore[arg-type]
    assert str(err.value) == message


def test_too_many_sections(tmp_path: Path) -> None:
    f = _files(tmp_path, kernel=b"K", rd=b"R")
    with pytest.raises(UsageError, match=r"^33 sections: an EIF holds at most 32$"):
        write_eif(
            tmp_path / "x.eif", kernel=f["kernel"], cmdline="c", ramdisks=[f["rd"]] * 30, metadata=DEMO_METADATA,
            arch="x86_64",
        )  # fmt: skip


@given(a=st.binary(max_size=2000), b=st.binary(max_size=2000))
def test_crc32_combine_matches_zlib(a: bytes, b: bytes) -> None:
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


def test_crc32_combine_large_lengths() -> None:
    a, b = b"header", bytes(5 * 1024 * 1024 + 3)
    assert crc32_combine(zlib.crc32(a), zlib.crc32(b), len(b)) == zlib.crc32(a + b)


@given(
    parts=st.lists(st.tuples(st.sampled_from(["boot", "app"]), st.binary(max_size=3000)), max_size=8),
    algo=st.sampled_from(["sha256", "sha384", "sha512"]),
    threaded=st.booleans(),
)
def test_hashers_match_the_pcr_definitions_in_any_order(
    parts: list[tuple[str, bytes]], algo: HashAlgo, threaded: bool
) -> None:
    crc = 0

    def side(chunk: bytes) -> None:
        nonlocal crc
        crc = zlib.crc32(chunk, crc)

    hashers = PcrHashers(algo, threaded=threaded, side=side)
    for role, chunk in parts:
        hashers.feed(chunk, "boot" if role == "boot" else "app")
        hashers.feed(b"unmeasured", None)
    measured = hashers.finish()
    assert crc == zlib.crc32(b"".join(chunk + b"unmeasured" for _, chunk in parts))
    assert measured.pcr0 == measure_bytes(b"".join(chunk for _, chunk in parts), algo)
    assert measured.pcr1 == measure_bytes(b"".join(chunk for role, chunk in parts if role == "boot"), algo)
    assert measured.pcr2 == measure_bytes(b"".join(chunk for role, chunk in parts if role == "app"), algo)


@pytest.mark.parametrize(
    ("size", "mib"), [(0, 0), (1, 4), (1 << 20, 4), ((1 << 20) + 1, 8), (300 << 20, 1200)]
)
def test_min_enclave_memory(size: int, mib: int) -> None:
    assert min_enclave_memory_mib(size) == mib


# ---------------------------------------------------------------------------------------------
# CLI: pcrs, describe, verify, pack


def test_cli_pcrs_and_pcrs_out(tmp_path: Path, capsys: Capture) -> None:
    out = _demo(tmp_path)
    assert cli.main(["pcrs", str(out), "--pcrs-out", str(tmp_path / "p.json")]) == 0
    printed = capsys.readouterr().out
    assert json.loads(printed) == {"HashAlgorithm": "Sha384 { ... }", **DEMO_PCRS}
    assert printed.startswith('{\n  "HashAlgorithm": "Sha384 { ... }",\n  "PCR0": "8bc06a70')
    assert (tmp_path / "p.json").read_text() == printed


def test_cli_describe_matches_nitro_cli_shape(tmp_path: Path, capsys: Capture) -> None:
    out = _demo(tmp_path)
    assert cli.main(["describe", str(out)]) == 0
    expected = {
        "EifVersion": 4,
        "Measurements": {"HashAlgorithm": "Sha384 { ... }", **DEMO_PCRS},
        "IsSigned": False,
        "CheckCRC": True,
        "ImageName": "demo",
        "ImageVersion": "1.0",
        "Metadata": {
            "BuildTime": "1970-01-01T00:00:00+00:00",
            "BuildTool": "eif_build",
            "BuildToolVersion": "0.3.1",
            "OperatingSystem": "OS",
            "KernelVersion": "kernel",
            "DockerInfo": None,
        },
    }
    assert capsys.readouterr().out == json.dumps(expected, indent=2) + "\n"


def test_describe_merges_custom_metadata_sorted(tmp_path: Path) -> None:
    f = _files(tmp_path, kernel=b"K", rd=b"R")
    meta = EifMetadata("n", "v", "t", custom={"zeta": 1.5e-7, "alpha": {"b": 1, "a": 2}})
    out = tmp_path / "m.eif"
    write_eif(out, kernel=f["kernel"], cmdline="c", ramdisks=[f["rd"]], metadata=meta, arch="x86_64")
    shown = describe(out)["Metadata"]
    assert isinstance(shown, dict)
    assert list(shown)[-2:] == ["alpha", "zeta"]
    assert shown["alpha"] == {"a": 2, "b": 1}


def test_cli_verify_ok_and_expected_pcrs(tmp_path: Path, capsys: Capture) -> None:
    out = _demo(tmp_path)
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"Measurements": {"HashAlgorithm": "x", **DEMO_PCRS}}))
    assert cli.main(["verify", str(out), "--pcrs", str(good)]) == 0
    assert capsys.readouterr().out == f"{out}: OK\n"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"PCR1": DEMO_PCRS["PCR0"], "PCR8": DEMO_PCRS["PCR0"]}))
    assert cli.main(["verify", str(out), "--pcrs", str(bad)]) == 1
    assert capsys.readouterr().out.splitlines() == [
        f"{out}: PCR1 mismatch: expected {DEMO_PCRS['PCR0']}, got {DEMO_PCRS['PCR1']}",
        f"{out}: PCR8 expected {DEMO_PCRS['PCR0']}, but the EIF is not signed",
    ]


def test_cli_verify_sha256_expectations(tmp_path: Path, capsys: Capture) -> None:
    out = _demo(tmp_path)
    assert cli.main(["pcrs", str(out), "--algo", "sha256", "--pcrs-out", str(tmp_path / "p.json")]) == 0
    capsys.readouterr()
    assert cli.main(["verify", str(out), "--pcrs", str(tmp_path / "p.json")]) == 0


def test_cli_verify_reports_crc_mismatch(tmp_path: Path, capsys: Capture) -> None:
    out = _demo(tmp_path)
    data = bytearray(out.read_bytes())
    data[-1] ^= 1  # last ramdisk byte: CRC and PCRs change, structure does not
    out.write_bytes(bytes(data))
    assert cli.main(["verify", str(out)]) == 1
    assert capsys.readouterr().out == (
        f"{out}: CRC mismatch: the header says 0xf4bbe29d, the contents give {zlib.crc32(data[:544] + data[548:]):#010x}\n"
    )
    assert describe(out)["CheckCRC"] is False


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[]", ': expected a JSON object with "PCR0"... keys (or a "Measurements" object holding them)'),
        ("{}", ': no "PCR<n>" keys found'),
        (
            '{"PCR3": "00"}',
            ", key 'PCR3': PCR3 cannot be computed from an EIF: only PCR0, PCR1, PCR2, PCR8 can",
        ),
        ('{"PCR0": "zz"}', ", key 'PCR0': expected a hex string"),
        (
            '{"PCR0": "00"}',
            ": expected PCRs must all be SHA-256, SHA-384 or SHA-512 hex digests of one length",
        ),
        (
            "{",
            ": not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
    ],
)
def test_cli_verify_rejects_bad_expected_pcrs(
    tmp_path: Path, capsys: Capture, content: str, message: str
) -> None:
    out = _demo(tmp_path)
    pcrs = tmp_path / "p.json"
    pcrs.write_text(content)
    assert cli.main(["verify", str(out), "--pcrs", str(pcrs)]) == 2
    assert capsys.readouterr().err == f"error: {pcrs}{message}\n"


def test_cli_pack_build_time_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    f = _files(tmp_path, bzImage=b"KERNEL", rd=b"R")
    base = ["-q", "pack", "--kernel", str(f["bzImage"]), "--cmdline", "c", "--ramdisk", str(f["rd"])]
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert cli.main([*base, "--output", str(tmp_path / "a.eif")]) == 0
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    assert cli.main([*base, "--output", str(tmp_path / "b.eif")]) == 0
    assert cli.main([*base, "--output", str(tmp_path / "c.eif"), "--build_time", "2001-02-03T04:05:06Z"]) == 0
    capsys.readouterr()
    times = [read_eif(tmp_path / f"{n}.eif").metadata for n in "abc"]
    assert [m.build_time if m else None for m in times] == [
        "1970-01-01T00:00:00+00:00",
        "2023-11-14T22:13:20+00:00",
        "2001-02-03T04:05:06Z",
    ]
    first = times[0]
    assert first is not None
    assert (first.image_name, first.image_version) == ("bzImage", "1.0")


def test_cli_pack_name_version_and_kernel_config(tmp_path: Path, capsys: Capture) -> None:
    f = _files(tmp_path, Image=b"KERNEL", rd=b"R")
    config = tmp_path / "Image.config"
    config.write_text(
        "#\n# Automatically generated file; DO NOT EDIT.\n# Linux/arm64 6.1.2-x Kernel Configuration\n"
    )
    args = [
        "-q",
        "pack",
        "--kernel",
        str(f["Image"]),
        "--cmdline",
        "c",
        "--ramdisk",
        str(f["rd"]),
        "--arch",
        "arm64",
    ]
    out = tmp_path / "o.eif"
    assert cli.main([*args, "--output", str(out), "--name", "app", "--kernel-config", str(config)]) == 0
    meta = read_eif(out).metadata
    assert meta is not None
    assert (meta.image_name, meta.image_version, meta.operating_system, meta.kernel_version) == (
        "app",
        "app",
        "Linux",
        "6.1.2",
    )
    assert cli.main([*args, "--output", str(out), "--name", "app", "--version", "2.0", "--img-os", "X"]) == 0
    meta = read_eif(out).metadata
    assert meta is not None
    assert (meta.image_version, meta.operating_system, meta.kernel_version) == ("2.0", "X", "kernel")
    assert read_eif(out).arch == "aarch64"
    capsys.readouterr()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--arch", "mips"], "key '--arch': unknown architecture 'mips': expected one of x86_64, aarch64"),
        (
            ["--build-time", "yesterday"],
            "key '--build-time': expected an RFC 3339 time like '2024-01-01T00:00:00+00:00', got 'yesterday'",
        ),
        (
            ["--build-time", "2024-01-01T00:00:00"],
            "key '--build-time': '2024-01-01T00:00:00' has no UTC offset; add '+00:00'",
        ),
        (
            ["--signing-certificate", "c.pem"],
            "--signing-certificate and --private-key must be given together",
        ),
        (
            ["--kernel_config", "missing.config"],
            "missing.config: cannot read kernel config: No such file or directory",
        ),
    ],
)
def test_cli_pack_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture, extra: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    _files(tmp_path, k=b"K", rd=b"R")
    args = ["pack", "--kernel", "k", "--cmdline", "c", "--ramdisk", "rd", "--output", "o.eif", *extra]
    assert cli.main(args) == 2
    assert capsys.readouterr().err == f"error: {message}\n"
    assert not (tmp_path / "o.eif").exists()


# ---------------------------------------------------------------------------------------------
# Streaming: ≥ 1 GiB of ramdisk in constant memory

_RSS_SCRIPT = """
import resource, sys
from pathlib import Path
from eifbuild.eif import EifMetadata
from eifbuild.eif.writer import write_eif
tmp = Path(sys.argv[1])
(tmp / "k").write_bytes(b"K" * 4096)
small = tmp / "small"
small.write_bytes(b"S" * 1000)
big = tmp / "big"
with big.open("wb") as fh:
    fh.truncate(int(sys.argv[2]))  # sparse: reads as zeros without using disk
m = write_eif(tmp / "out.eif", kernel=tmp / "k", cmdline="c", ramdisks=[small, big],
              metadata=EifMetadata("n", "v", "t"), arch="x86_64")
# ru_maxrss also counts the parent's resident memory inherited through vfork/exec (the whole pytest
# process, hundreds of MiB late in a run); VmHWM is this process image's own peak, in KiB too.
status = Path("/proc/self/status")
hwm = [line.split()[1] for line in status.read_text().splitlines() if line.startswith("VmHWM:")] if status.exists() else []
print(hwm[0] if hwm else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, m.pcr2)
"""


@pytest.mark.slow
def test_packing_a_gibibyte_keeps_memory_flat(tmp_path: Path) -> None:
    size = (1 << 30) + 12345
    result = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, str(tmp_path), str(size)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    max_rss_kib, pcr2 = result.stdout.split()
    assert int(max_rss_kib) < 150 * 1024, f"peak RSS {int(max_rss_kib) // 1024} MiB"
    digest = hashlib.sha384()
    zeros = bytes(1 << 20)
    for _ in range(size >> 20):
        digest.update(zeros)
    digest.update(bytes(size & ((1 << 20) - 1)))
    assert pcr2 == hashlib.sha384(bytes(48) + digest.digest()).hexdigest()
    assert (tmp_path / "out.eif").stat().st_size == 548 + 12 * 5 + 4096 + 1 + 1000 + size + len(
        EifMetadata("n", "v", "t").to_bytes()
    )


def test_cli_start_up_imports_only_what_the_command_needs() -> None:
    """Start-up time is part of every command's time: requests (~0.17 s here) and cryptography
    (~0.08 s) are imported by the commands that use them, not by ``eifbuild --help``."""
    script = (
        "import sys; from eifbuild import cli; cli.build_parser(); "
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    loaded = set(result.stdout.split())
    assert "eifbuild" in loaded
    assert not loaded & {"requests", "urllib3", "cryptography", "cbor2", "ziglang"}, sorted(loaded)
    version = subprocess.run(
        [sys.executable, "-m", "eifbuild", "--version"], capture_output=True, text=True, check=True
    )
    assert version.stdout.startswith("eifbuild ")
