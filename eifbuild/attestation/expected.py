"""What a relying party expects, from the command line's words: PCR files and ``N=HEX``, hex
values, durations and times. Every bad value is a :class:`~eifbuild.errors.UsageError` naming its
option (a file that cannot be read or parsed: FileAccessError or InputError)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Final

from ..errors import FileAccessError, UsageError

if TYPE_CHECKING:
    from collections.abc import Iterable

_DURATION: Final = re.compile(r"(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?")
_PCR_ARG: Final = re.compile(r"(?:PCR)?(\d{1,2})=([0-9a-fA-F]*)", re.IGNORECASE)
_PCR_KEY: Final = re.compile(r"PCR(\d{1,2})")


def parse_hex(text: str, *, key: str) -> bytes:
    """Bytes from hex (``0x`` prefix and whitespace allowed)."""
    cleaned = "".join(text.split()).removeprefix("0x")
    try:
        return bytes.fromhex(cleaned)
    except ValueError:
        msg = f"not hex: {text[:40]!r}"
        raise UsageError(msg, key=key) from None


def parse_pcr_args(args: Iterable[str]) -> dict[int, str]:
    """``--pcr N=HEX`` (or ``PCRN=HEX``), any index 0..31, 96 hex digits."""
    pcrs: dict[int, str] = {}
    for arg in args:
        match = _PCR_ARG.fullmatch(arg.strip())
        if match is None or int(match[1]) > 31:
            msg = f"expected N=HEX with N in 0..31: {arg!r}"
            raise UsageError(msg, key="--pcr")
        index, value = int(match[1]), match[2].lower()
        if len(value) != 96:
            msg = f"PCR{index} must be 96 hex digits (SHA-384), not {len(value)}"
            raise UsageError(msg, key="--pcr")
        if pcrs.get(index, value) != value:
            msg = f"PCR{index} given twice with different values"
            raise UsageError(msg, key="--pcr")
        pcrs[index] = value
    return pcrs


def load_pcr_file(path: str | Path) -> dict[int, str]:
    """PCR0/1/2 (and PCR8 when present) from a PCR JSON file as ``eifbuild pack``, eif_build or
    nitro-cli print it."""
    from ..eif import load_expected_pcrs  # noqa: PLC0415 - the EIF checker's one reader of these files

    pcrs: dict[int, str] = {}
    for key, value in load_expected_pcrs(Path(path)).items():
        match = _PCR_KEY.fullmatch(key)
        if match is None or len(value) != 96:
            msg = f"{path}: {key} is not a SHA-384 PCR (96 hex digits)"
            raise UsageError(msg, key="--pcrs")
        pcrs[int(match[1])] = value.lower()
    return pcrs


def merge_pcrs(from_file: dict[int, str], from_args: dict[int, str]) -> dict[int, str]:
    """``--pcrs``' and ``--pcr``'s expectations together; one index given two values is an error."""
    for index, value in from_args.items():
        if from_file.get(index, value) != value:
            msg = f"PCR{index} differs between --pcrs and --pcr"
            raise UsageError(msg, key="--pcr")
    return {**from_file, **from_args}


def parse_duration(text: str) -> timedelta:
    """``90`` (seconds), ``90s``, ``5m``, ``3h``, ``1d``, or a sum of them (``1h30m``)."""
    cleaned = text.strip().lower()
    if cleaned.isdigit():
        return timedelta(seconds=int(cleaned))
    match = _DURATION.fullmatch(cleaned)
    if not cleaned or match is None:
        msg = f"expected a duration like 90s, 5m, 3h, 1d or 1h30m: {text!r}"
        raise UsageError(msg, key="--max-age")
    days, hours, minutes, seconds = (int(part or 0) for part in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def parse_time(text: str) -> datetime:
    """An RFC 3339 time with a UTC offset or ``Z`` (``2024-09-07T14:37:39Z``), or ``now``."""
    if text.strip().lower() == "now":
        return datetime.now(timezone.utc)
    cleaned = text.strip()
    if cleaned.endswith(("Z", "z")):
        cleaned = cleaned[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        msg = f"expected an RFC 3339 time like 2024-09-07T14:37:39Z: {text!r}"
        raise UsageError(msg, key="--at") from None
    if moment.tzinfo is None:
        msg = f"the time needs a UTC offset or Z: {text!r}"
        raise UsageError(msg, key="--at")
    return moment


def read_public_key(path: Path) -> bytes:
    """The public key a document must carry: the file's bytes (a PEM public key becomes its DER
    SubjectPublicKeyInfo, the form enclaves usually put in ``public_key``)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        msg = f"cannot read the public key: {exc.strerror}"
        raise FileAccessError(msg, path=path) from None
    if not data.lstrip().startswith(b"-----BEGIN PUBLIC KEY-----"):
        return data
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415

    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        msg = f"{path}: not a PEM public key"
        raise UsageError(msg, key="--public-key") from None
    return key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
