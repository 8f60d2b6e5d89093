"""Inspecting existing EIFs: nitro-cli's describe-eif view, and a verifier that lists every defect.

:func:`verify` returns problems (one line each) for defects a well-formed EIF must not have but
that do not stop us from reading it: bad CRC, unknown flag bits, gaps or trailing bytes (nitro-cli's
sequential reader chokes on them), a missing metadata section, a signature that does not verify,
signs another PCR0, is not in eif_build's CBOR layout or whose certificate is not currently valid,
and PCRs that differ from the expected ones. Files it cannot read raise :class:`EifFormatError`.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final

from ..errors import InputError, first_line
from ..util.bounded import read_regular
from ._cose import cose_problem, pcr_payload
from .format import FLAG_AARCH64, MAX_SECTIONS
from .metadata import EifMetadata, JsonValue, loads
from .pcr import DEFAULT_ALGO, HashAlgo, algo_for_digest_size
from .reader import EifImage, Scan, as_image, scan, section_gaps
from .sign import describe_certificate, validity_problem

if TYPE_CHECKING:
    from collections.abc import Mapping
    from datetime import datetime
    from pathlib import Path

    from ._cose import SignatureInfo

CHECKABLE_PCRS: Final = ("PCR0", "PCR1", "PCR2", "PCR8")
_PCRS_MAX: Final = 1 << 20  # an expected-PCRs JSON file: a few hundred bytes; describe-eif's a few KiB


def _signed_algo(signature: SignatureInfo | None) -> HashAlgo | None:
    """The algorithm of the PCR0 value that was signed (eif_build --algo changes it)."""
    return None if signature is None else algo_for_digest_size(len(signature.register_value))


def _scan_for(image: EifImage, algo: HashAlgo) -> Scan:
    signed = _signed_algo(image.signature)
    return scan(image, (algo,) if signed is None else (algo, signed))


def _signed_pcr0_problem(image: EifImage, result: Scan) -> str | None:
    signature = image.signature
    if signature is None:
        return None
    if signature.register_index != 0:
        return f"signature covers PCR{signature.register_index}, expected PCR0"
    signed = _signed_algo(signature)
    if signed is None:
        return f"signed PCR0 value is {len(signature.register_value)} bytes: no SHA-2 digest has that size"
    actual = result.measurements[signed].pcr0
    if signature.register_value.hex() != actual:
        return f"signed PCR0 {signature.register_value.hex()} does not match the image's PCR0 {actual}"
    if signature.payload != pcr_payload(signature.register_value):
        return "signed payload is not in eif_build's CBOR layout (nitro-cli's SignatureCheck compares bytes)"
    return None


# ---------------------------------------------------------------------------------------------
# describe


def describe(source: EifImage | Path, *, algo: HashAlgo = DEFAULT_ALGO) -> dict[str, JsonValue]:
    """What ``nitro-cli describe-eif`` prints, with its key order.

    Deviations: a signature that fails to verify gives ``"SignatureCheck": false`` where nitro-cli
    errors out; non-object CustomMetadata is shown under ``"CustomMetadata"`` where nitro-cli fails;
    a custom key equal to a fixed Metadata key replaces it (nitro-cli prints the key twice).
    """
    image = as_image(source)
    result = _scan_for(image, algo)
    out: dict[str, JsonValue] = {
        "EifVersion": image.header.version,
        "Measurements": dict(result.measurements[algo].to_json()),
        "IsSigned": image.is_signed,
    }
    signature = image.signature
    if signature is not None:
        out["SigningCertificate"] = describe_certificate(signature.certificate)
    out["CheckCRC"] = result.crc == image.header.crc
    if signature is not None:
        out["SignatureCheck"] = (
            cose_problem(signature) is None and _signed_pcr0_problem(image, result) is None
        )
    if image.metadata is not None:
        out["ImageName"] = image.metadata.image_name
        out["ImageVersion"] = image.metadata.image_version
        out["Metadata"] = _describe_metadata(image.metadata)
    return out


def _describe_metadata(metadata: EifMetadata) -> dict[str, JsonValue]:
    shown: dict[str, JsonValue] = {**metadata.build_metadata(), "DockerInfo": metadata.docker_info}
    if isinstance(metadata.custom, dict):
        shown.update(metadata.custom)
    elif metadata.custom is not None:
        shown["CustomMetadata"] = metadata.custom
    return shown


# ---------------------------------------------------------------------------------------------
# verify


def verify(
    source: EifImage | Path,
    expected_pcrs: Mapping[str, str] | None = None,
    *,
    now: datetime | None = None,
) -> list[str]:
    """Every problem found in the EIF (empty when it is sound); raises EifFormatError if unreadable.

    ``expected_pcrs`` maps "PCR0"… to hex values (as :func:`load_expected_pcrs` returns; other
    keys such as "HashAlgorithm" are ignored); their length selects the hash algorithm. ``now`` is
    the time the signing certificate must be valid at (default: the current time).
    """
    image = as_image(source)
    expected = {name: value for name, value in (expected_pcrs or {}).items() if name.startswith("PCR")}
    algo = _expected_algo(expected)
    result = _scan_for(image, algo)
    problems = [*_header_problems(image), *_layout_problems(image)]
    if result.crc != image.header.crc:
        problems.append(
            f"CRC mismatch: the header says {image.header.crc:#010x}, the contents give {result.crc:#010x}"
        )
    problems += _metadata_problems(image)
    problems += _signature_problems(image, result, now)
    actual = result.measurements[algo].pcrs()
    for name, value in expected.items():
        if name not in actual:
            problems.append(f"{name} expected {value}, but the EIF is not signed")
        elif actual[name] != value.lower():
            problems.append(f"{name} mismatch: expected {value.lower()}, got {actual[name]}")
    return problems


def _header_problems(image: EifImage) -> list[str]:
    header = image.header
    problems = []
    if header.flags & ~FLAG_AARCH64:
        problems.append(
            f"header flags {header.flags:#06x} set unknown bits (only bit 0, aarch64, is defined)"
        )
    count = header.num_sections
    if any(header.offsets[count:MAX_SECTIONS]) or any(header.sizes[count:MAX_SECTIONS]):
        problems.append(f"section table entries after the first {count} are not zero")
    problems += [
        f"section {s.index} ({s.type.name.lower()}) has flags {s.flags:#06x}, expected 0 (QEMU rejects it)"
        for s in image.sections
        if s.flags
    ]
    return problems


def _layout_problems(image: EifImage) -> list[str]:
    gaps = section_gaps(image)
    problems = [
        f"section {section.index} starts at {section.offset}, {gap} bytes after "
        f"the previous one ends: nitro-cli's sequential reader cannot read gaps"
        for section, gap in gaps.before
    ]
    if gaps.trailing:
        problems.append(
            f"{gaps.trailing} bytes after the last section: nitro-cli's sequential reader misreads them"
        )
    return problems


def _metadata_problems(image: EifImage) -> list[str]:
    metadata = image.metadata
    if metadata is None:
        return ["no metadata section: version 4 EIFs must have one"] if image.header.version >= 4 else []
    custom = metadata.custom
    if custom is not None and not isinstance(custom, dict):
        return ["metadata CustomMetadata is neither an object nor null: nitro-cli describe-eif fails on it"]
    return []


def _signature_problems(image: EifImage, result: Scan, now: datetime | None) -> list[str]:
    signature = image.signature
    if signature is None:
        return []
    found = [cose_problem(signature), _signed_pcr0_problem(image, result)]
    validity = validity_problem(signature.certificate, now)
    found.append(f"signing {validity}" if validity else None)
    if not signature.canonical:
        found.append(
            "signature section is not in eif_build's CBOR layout (QEMU and the hypervisor expect it)"
        )
    return [problem for problem in found if problem]


# ---------------------------------------------------------------------------------------------
# expected PCRs


_HEX: Final = re.compile(r"[0-9a-fA-F]+")


def _expected_algo(expected: Mapping[str, str], path: Path | None = None) -> HashAlgo:
    sizes = {len(value) for value in expected.values()}
    if not sizes:
        return DEFAULT_ALGO
    algo = algo_for_digest_size(sizes.pop() // 2) if len(sizes) == 1 else None
    if algo is None:
        msg = "expected PCRs must all be SHA-256, SHA-384 or SHA-512 hex digests of one length"
        raise InputError(msg, path=path)
    return algo


def load_expected_pcrs(path: Path) -> dict[str, str]:
    """Expected PCRs from eif_build/`eifbuild pack` output, nitro-cli build-enclave or describe-eif JSON."""
    data = read_regular(path, limit=_PCRS_MAX, what="expected PCRs")
    try:
        value = loads(data)
    except ValueError as exc:
        msg = f"not valid JSON: {first_line(exc)}"
        raise InputError(msg, path=path) from None
    if isinstance(value, dict) and isinstance(value.get("Measurements"), dict):
        value = value["Measurements"]
    if not isinstance(value, dict):
        msg = 'expected a JSON object with "PCR0"... keys (or a "Measurements" object holding them)'
        raise InputError(msg, path=path)
    pcrs = {key: pcr for key, pcr in value.items() if key.startswith("PCR")}
    if not pcrs:
        msg = 'no "PCR<n>" keys found'
        raise InputError(msg, path=path)
    for key, pcr in pcrs.items():
        if key not in CHECKABLE_PCRS:
            msg = f"{key} cannot be computed from an EIF: only {', '.join(CHECKABLE_PCRS)} can"
            raise InputError(msg, path=path, key=key)
        if not isinstance(pcr, str) or not _HEX.fullmatch(pcr):
            msg = "expected a hex string"
            raise InputError(msg, path=path, key=key)
    checked = {key: str(pcr) for key, pcr in pcrs.items()}
    _expected_algo(checked, path)
    return checked
