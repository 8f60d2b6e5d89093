"""``eifbuild attestation verify``: exit 0 verified, 1 not verified (one line naming the rule), 2
cannot run; never a traceback."""

from __future__ import annotations

import io
import json
from typing import TYPE_CHECKING

import pytest
from attestation_helpers import BY_FILE, VECTORS, emulator_document, parts, raw

from eifbuild import cli

if TYPE_CHECKING:
    from pathlib import Path

Capture = pytest.CaptureFixture[str]
GOOD = "13.b64"
AT = "2024-09-07T14:37:40Z"


def _pcr_file(tmp_path: Path, name: str = GOOD, *, pcr8: bool = True) -> Path:
    doc = BY_FILE[name]
    value = {"HashAlgorithm": "Sha384 { ... }", **{f"PCR{i}": doc[f"pcr{i}"] for i in (0, 1, 2)}}
    if pcr8:
        value["PCR8"] = doc["pcr8"]
    path = tmp_path / "hello.pcr.json"
    path.write_text(json.dumps(value), encoding="utf-8")
    return path


def _run(capsys: Capture, *args: str) -> tuple[int, str, str]:
    code = cli.main(["attestation", "verify", *args])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return code, out, err


def test_verified_with_a_pcr_file(tmp_path: Path, capsys: Capture) -> None:
    code, out, _ = _run(capsys, str(VECTORS / GOOD), "--pcrs", str(_pcr_file(tmp_path)), "--at", AT)
    assert code == 0
    assert out.startswith("verified: i-0a22e5c5f24d22174-enc0191cceb4289903f, made 2024-09-07T14:37:39.545Z")
    assert "PCR8" in out


def test_json_output_is_the_payload(tmp_path: Path, capsys: Capture) -> None:
    nonce = parts(raw(GOOD)).payload["nonce"]
    args = [str(VECTORS / GOOD), "--pcrs", str(_pcr_file(tmp_path)), "--at", AT, "--json"]
    code, out, _ = _run(capsys, *args, "--nonce", nonce.hex(), "--max-age", "5m")  # type: ignore[union-attr]
    assert code == 0
    value = json.loads(out)
    assert value["verified"] is True
    assert value["module_id"] == BY_FILE[GOOD]["module_id"]
    assert value["timestamp_ms"] == BY_FILE[GOOD]["timestamp_ms"]
    assert value["pcrs"]["PCR0"] == BY_FILE[GOOD]["pcr0"]
    assert value["nonce"] == nonce.hex()  # type: ignore[union-attr]
    assert value["checked"][-2:] == ["nonce", "max-age"]


def test_stdin_and_a_pcr_option(monkeypatch: pytest.MonkeyPatch, capsys: Capture) -> None:
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(raw(GOOD))))
    code, out, _ = _run(capsys, "-", "--pcr", f"3={parts(raw(GOOD)).payload['pcrs'][3].hex()}", "--at", AT)  # type: ignore[index]
    assert (code, out.split(";")[1].strip()) == (0, "checked: structure, chain, signature, PCR3")


@pytest.mark.parametrize(("args", "line"), [
    (["--allow-debug"], None),
    ([], "not verified: policy.debug: PCR0, PCR1 and PCR2 are all zero"),
])  # fmt: skip
def test_debug_mode(tmp_path: Path, capsys: Capture, args: list[str], line: str | None) -> None:
    pcrs = _pcr_file(tmp_path, "14.b64")
    code, out, _ = _run(capsys, str(VECTORS / "14.b64"), "--pcrs", str(pcrs), "--at", "2024-09-07T14:38:07Z", *args)
    if line is None:
        assert code == 0
    else:
        assert code == 1
        assert out.startswith(line)
        assert out.count("\n") == 1


def test_not_verified_is_one_line_and_exit_1(tmp_path: Path, capsys: Capture) -> None:
    code, out, _ = _run(capsys, str(VECTORS / GOOD), "--pcrs", str(_pcr_file(tmp_path)))  # as of now: expired
    assert code == 1
    assert out.startswith("not verified: chain.expired: ")
    assert out.count("\n") == 1


def test_a_10_mb_document_is_one_line(tmp_path: Path, capsys: Capture) -> None:
    big = tmp_path / "big"
    big.write_bytes(b"\x84" + bytes(10 * 1024 * 1024))
    code, out, _ = _run(capsys, str(big), "--nonce", "00")
    assert (code, out.count("\n")) == (1, 1)
    assert out.startswith("not verified: structure.size: ")


def test_refused_json(tmp_path: Path, capsys: Capture) -> None:
    code, out, _ = _run(capsys, str(VECTORS / GOOD), "--pcrs", str(_pcr_file(tmp_path)), "--json")
    assert code == 1
    assert json.loads(out)["reason"] == "chain.expired"


@pytest.mark.parametrize(("args", "message"), [
    (["DOC"], "nothing to verify against"),
    (["MISSING", "--nonce", "00"], "cannot read the attestation document"),
    (["DOC", "--nonce", "zz"], "--nonce"),
    (["DOC", "--pcr", "40=00"], "--pcr"),
    (["DOC", "--pcr", "3=abcd"], "96 hex digits"),
    (["DOC", "--nonce", "00", "--max-age", "soon"], "--max-age"),
    (["DOC", "--nonce", "00", "--at", "yesterday"], "--at"),
    (["DOC", "--nonce", "00", "--at", "2024-09-07T14:37:40"], "UTC offset"),
    (["DOC", "--nonce", "00", "--root", "MISSING"], "cannot read the root certificate"),
    (["DOC", "--pcrs", "MISSING"], "cannot read expected PCRs"),
])  # fmt: skip
def test_cannot_run_is_exit_2(tmp_path: Path, capsys: Capture, args: list[str], message: str) -> None:
    replaced = [
        str(VECTORS / GOOD) if a == "DOC" else str(tmp_path / "missing") if a == "MISSING" else a for a in args
    ]
    code, out, err = _run(capsys, *replaced)
    assert code == 2
    assert out == ""
    assert err.startswith("error: ")
    assert message in err
    assert err.count("\n") == 1


def test_insecure_emulator_prints_that_it_skipped(tmp_path: Path, capsys: Capture) -> None:
    doc = tmp_path / "qemu.cbor"
    doc.write_bytes(emulator_document())
    code, out, _ = _run(capsys, str(doc), "--pcr", f"0={'01' * 48}")
    assert code == 1
    assert out.startswith("not verified: structure.emulator: alg -1")
    code, out, err = _run(capsys, str(doc), "--pcr", f"0={'01' * 48}", "--insecure-emulator")
    assert code == 0
    assert "chain and signature skipped (--insecure-emulator)" in out
    assert "NOT checked" in err
