"""AWS eif_build 0.3.1 reference vectors: `eifbuild pack` with the same arguments must agree.

Each case folder holds args.txt (eif_build's arguments, run from inputs/), expected.eif and
expected-pcrs.json (see the vectors' README). Byte-identical cases must match byte for byte; for
the others (current time stamped, randomised ECDSA) everything that is deterministic must match.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import VECTORS
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from eifbuild import cli
from eifbuild.eif import EifImage, SectionType, load_expected_pcrs, read_eif, verify
from eifbuild.eif._cose import COSE_ALGORITHMS, SignatureInfo, decode_signature_section
from eifbuild.eif.format import HEADER_SIZE
from eifbuild.eif.reader import read_section
from eifbuild.util.cbor import sig_structure

Capture = pytest.CaptureFixture[str]

CASES = sorted(p.parent.name for p in VECTORS.glob("*/args.txt"))
assert CASES, f"no vector cases found under {VECTORS}"

BYTE_IDENTICAL = {
    "x86_1rd_fixed",
    "x86_2rd_fixed_named",
    "arm_3rd_fixed_named",
    "x86_2rd_fixed_named_sha256",
    "x86_2rd_fixed_named_sha512",
    "x86_2rd_fixed_overrides",
    "x86_2rd_fixed_metadata",
    "x86_edge_tiny_empty",
}
STAMPED_NOW = {"x86_2rd_now", "x86_2rd_kconfig", "arm_2rd_kconfig"}


def _args(case: Path) -> list[str]:
    args = case.joinpath("args.txt").read_text(encoding="utf-8").splitlines()
    if "--name" in args:
        # eif_build writes --name as ImageVersion and ignores --version; we honour --version.
        args += ["--version", args[args.index("--name") + 1]]
    return args


def _pack(
    case: str, vectors_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> Path:
    out = tmp_path / "out.eif"
    monkeypatch.chdir(vectors_dir / "inputs")
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    assert cli.main(["-q", "pack", *_args(vectors_dir / case), "--output", str(out)]) == 0
    printed = capsys.readouterr().out
    assert printed == (vectors_dir / case / "expected-pcrs.json").read_text(encoding="utf-8")
    return out


def test_corpus_is_complete(vectors_dir: Path) -> None:
    assert set(CASES) >= BYTE_IDENTICAL | STAMPED_NOW
    assert {c for c in CASES if c.endswith("_signed")}


@pytest.mark.parametrize("case", sorted(BYTE_IDENTICAL))
def test_byte_identical(
    case: str, vectors_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    out = _pack(case, vectors_dir, tmp_path, monkeypatch, capsys)
    assert out.read_bytes() == (vectors_dir / case / "expected.eif").read_bytes()


def _sections_except(image: EifImage, kind: SectionType) -> list[tuple[SectionType, bytes]]:
    return [(s.type, read_section(image, s)) for s in image.sections if s.type != kind]


@pytest.mark.parametrize("case", sorted(STAMPED_NOW))
def test_stamped_now_matches_except_build_time(
    case: str, vectors_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    out = _pack(case, vectors_dir, tmp_path, monkeypatch, capsys)
    ours, theirs = read_eif(out), read_eif(vectors_dir / case / "expected.eif")
    assert _sections_except(ours, SectionType.METADATA) == _sections_except(theirs, SectionType.METADATA)
    assert ours.metadata is not None
    assert theirs.metadata is not None
    # eif_build 0.3.1 stamps the wall clock here; we honour --build-time (or SOURCE_DATE_EPOCH).
    args = _args(vectors_dir / case)
    expected_time = (
        args[args.index("--build-time") + 1] if "--build-time" in args else "1970-01-01T00:00:00+00:00"
    )
    assert ours.metadata.build_time == expected_time
    assert ours.metadata.to_json() | {"BuildMetadata": None} == theirs.metadata.to_json() | {
        "BuildMetadata": None
    }
    assert ours.metadata.build_metadata() | {"BuildTime": ""} == theirs.metadata.build_metadata() | {
        "BuildTime": ""
    }
    assert verify(out) == []


def _assert_cose_verifies(info: SignatureInfo) -> None:
    """Check the COSE signature with cryptography directly (independent of eifbuild's verifier)."""
    key = info.certificate.public_key()
    assert isinstance(key, ec.EllipticCurvePublicKey)
    size = COSE_ALGORITHMS[key.curve.name].size
    r, s = int.from_bytes(info.signature[:size], "big"), int.from_bytes(info.signature[size:], "big")
    message = sig_structure(info.protected, info.payload)
    key.verify(encode_dss_signature(r, s), message, ec.ECDSA(hashes.SHA384()))


@pytest.mark.parametrize("case", [c for c in CASES if c.endswith("_signed")])
def test_signed_matches_outside_the_signature(
    case: str, vectors_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Capture
) -> None:
    out = _pack(case, vectors_dir, tmp_path, monkeypatch, capsys)
    reference = vectors_dir / case / "expected.eif"
    ours, theirs = read_eif(out), read_eif(reference)
    ours_bytes, theirs_bytes = out.read_bytes(), reference.read_bytes()
    sig = ours.sections[-1]
    assert sig.type == theirs.sections[-1].type == SectionType.SIGNATURE
    assert sig.offset == theirs.sections[-1].offset
    # Every byte before the signature section, except the CRC and the signature's size entry.
    size_entry = 284 + 8 * sig.index
    assert ours_bytes[:size_entry] == theirs_bytes[:size_entry]
    assert ours_bytes[size_entry + 8 : 544] == theirs_bytes[size_entry + 8 : 544]
    assert ours_bytes[HEADER_SIZE : sig.offset] == theirs_bytes[HEADER_SIZE : sig.offset]
    # The signature sections differ only in the ECDSA value (randomised in eif_build).
    expected_section = (vectors_dir / case / "signature_section.bin").read_bytes()
    assert read_section(theirs, theirs.sections[-1]) == expected_section
    mine = decode_signature_section(read_section(ours, sig))
    ref = decode_signature_section(expected_section)
    assert (mine.certificate_pem, mine.protected, mine.payload) == (
        ref.certificate_pem,
        ref.protected,
        ref.payload,
    )
    assert mine.canonical
    assert ref.canonical
    _assert_cose_verifies(mine)
    _assert_cose_verifies(ref)
    expected_pcrs = load_expected_pcrs(vectors_dir / case / "expected-pcrs.json")
    assert verify(out, expected_pcrs) == []
    assert verify(theirs, expected_pcrs) == []


@pytest.mark.parametrize("case", CASES)
def test_reader_reproduces_reference_pcrs(case: str, vectors_dir: Path, capsys: Capture) -> None:
    expected = vectors_dir / case / "expected-pcrs.json"
    assert cli.main(["pcrs", str(vectors_dir / case / "expected.eif"), "--algo", _algo(expected)]) == 0
    assert capsys.readouterr().out == expected.read_text(encoding="utf-8")
    assert cli.main(["-q", "verify", str(vectors_dir / case / "expected.eif"), "--pcrs", str(expected)]) == 0


def _algo(pcrs: Path) -> str:
    label = json.loads(pcrs.read_text())["HashAlgorithm"]
    return {"Sha256 { ... }": "sha256", "Sha384 { ... }": "sha384", "Sha512 { ... }": "sha512"}[label]
