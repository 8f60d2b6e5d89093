"""Why two EIFs differ: pure functions from two :class:`~._summary.EifSummary` to a list of
:class:`Change`, most important first (measured sections, the signature, then what no PCR sees).

Each change says where (``kernel``, ``cmdline``, ``ramdisk[1]:rootfs/etc/app.conf``,
``metadata.ImageVersion`` …), whether it is measured, which PCRs it moves, and what changed at the
finest level that explains it.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ..eif import SectionType, read_eif, section_gaps
from ..errors import EifFormatError
from ._diffcpio import ramdisk_changes
from ._summary import same_bytes, section_pcrs, summarize

if TYPE_CHECKING:
    from pathlib import Path

    from ..eif import EifImage, HashAlgo, JsonValue, Measurements
    from ._summary import EifSummary

ORDER: Final = ("PCR0", "PCR1", "PCR2", "PCR8")
_SIGNATURE_PCRS: Final = ("PCR8",)
_UNMEASURED: Final[tuple[str, ...]] = ()
_TIME: Final = "%Y-%m-%d %H:%M:%S"


@dataclass(frozen=True)
class Change:
    where: str
    measured: bool
    pcrs: tuple[str, ...]
    detail: str


@dataclass(frozen=True)
class DiffResult:
    identical: bool
    algo: str
    pcrs: tuple[str, ...]  # the PCRs whose values differ
    measurements: tuple[dict[str, str], dict[str, str]]
    changes: tuple[Change, ...]


def differing_pcrs(a: Measurements, b: Measurements) -> tuple[str, ...]:
    """Names of the PCRs whose values differ (present in only one EIF counts: PCR8 when one is signed)."""
    pa, pb = a.pcrs(), b.pcrs()
    return tuple(name for name in ORDER if pa.get(name) != pb.get(name))


def diff_files(a: Path, b: Path, algo: HashAlgo) -> DiffResult:
    """Compare two EIF files: identical bytes (which still have to be an EIF), or the changes between
    their summaries. Each file is read once: only files whose headers agree (CRC included) can hold
    the same bytes, and those are compared before anything else is read."""
    image_a = read_eif(a)
    try:
        image_b = read_eif(b)
    except EifFormatError:
        summarize(image_a, algo)  # what is wrong in ``a`` (a corrupt ramdisk) is reported first
        raise
    if image_a.file_size == image_b.file_size and image_a.header == image_b.header and same_bytes(a, b):
        return DiffResult(True, algo, (), ({}, {}), ())
    return compare(summarize(image_a, algo), summarize(image_b, algo), algo)


def compare(a: EifSummary, b: EifSummary, algo: str) -> DiffResult:
    changes = [
        *kernel_changes(a, b),
        *cmdline_changes(a.image, b.image),
        *all_ramdisk_changes(a, b),
        *signature_changes(a.image, b.image),
        *metadata_changes(a.image, b.image),
        *header_changes(a, b),
    ]
    return DiffResult(
        identical=False,
        algo=algo,
        pcrs=differing_pcrs(a.measurements, b.measurements),
        measurements=(a.measurements.pcrs(), b.measurements.pcrs()),
        changes=tuple(changes),
    )


def short(digest: str) -> str:
    return digest[:16]


# ---------------------------------------------------------------------------------------------
# kernel and cmdline


def kernel_changes(a: EifSummary, b: EifSummary) -> list[Change]:
    ka, kb = a.kernel, b.kernel
    if ka.sha256 == kb.sha256:
        return []
    parts = [f"sha256 {short(ka.sha256)}… → {short(kb.sha256)}…"]
    if ka.size != kb.size:
        parts.append(f"size {ka.size} → {kb.size} bytes")
    else:
        parts.append(f"same size ({ka.size} bytes)")
    if ka.version != kb.version:
        parts.append(f"version {ka.version!r} → {kb.version!r}")
    elif ka.version:
        parts.append(f"same version string {ka.version!r}")
    pcrs = section_pcrs(a.image, a.image.kernel)
    return [Change("kernel", True, pcrs, "; ".join(parts))]


def cmdline_changes(a: EifImage, b: EifImage) -> list[Change]:
    if a.cmdline_bytes == b.cmdline_bytes:
        return []
    wa, wb = a.cmdline.split(), b.cmdline.split()
    removed = list((Counter(wa) - Counter(wb)).elements())
    added = list((Counter(wb) - Counter(wa)).elements())
    parts = [f"removed {w!r}" for w in removed] + [f"added {w!r}" for w in added]
    if not parts:
        parts = ["same words, different order or spacing" if wa != wb or a.cmdline != b.cmdline else ""]
    pcrs = section_pcrs(a, a.of_type(SectionType.CMDLINE)[0])
    return [Change("cmdline", True, pcrs, "; ".join(parts))]


def all_ramdisk_changes(a: EifSummary, b: EifSummary) -> list[Change]:
    changes: list[Change] = []
    for index in range(max(len(a.ramdisks), len(b.ramdisks))):
        where = f"ramdisk[{index}]"
        if index >= len(b.ramdisks):
            ra = a.ramdisks[index]
            pcrs = section_pcrs(a.image, a.image.ramdisks[index])
            changes.append(Change(where, True, pcrs, f"{ra.label} removed ({ra.size} bytes)"))
        elif index >= len(a.ramdisks):
            rb = b.ramdisks[index]
            pcrs = section_pcrs(b.image, b.image.ramdisks[index])
            changes.append(Change(where, True, pcrs, f"{rb.label} added ({rb.size} bytes)"))
        else:
            pcrs = section_pcrs(a.image, a.image.ramdisks[index])
            changes += [
                Change(w, True, pcrs, d) for w, d in ramdisk_changes(a.ramdisks[index], b.ramdisks[index])
            ]
    return changes


# ---------------------------------------------------------------------------------------------
# signature (PCR8)


def certificate_facts(image: EifImage) -> dict[str, str]:
    """What identifies the signing certificate (empty when unsigned)."""
    signature = image.signature
    if signature is None:
        return {}
    cert = signature.certificate
    from cryptography.hazmat.primitives.serialization import Encoding  # noqa: PLC0415 - signed EIFs only

    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": f"{cert.serial_number:#x}",
        "validity": f"{cert.not_valid_before_utc:{_TIME}} to {cert.not_valid_after_utc:{_TIME}} UTC",
        "sha256 fingerprint": hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest(),
    }


def signature_changes(a: EifImage, b: EifImage) -> list[Change]:
    sa = a.of_type(SectionType.SIGNATURE)
    sb = b.of_type(SectionType.SIGNATURE)
    if not sa and not sb:
        return []
    facts_a, facts_b = certificate_facts(a), certificate_facts(b)
    if not sa or not sb:
        state = "signed" if sb else "unsigned"
        facts = facts_b or facts_a
        who = ", ".join(f"{k} {v}" for k, v in facts.items() if k in ("subject", "sha256 fingerprint"))
        return [Change("signature", True, _SIGNATURE_PCRS, f"now {state} ({who})")]
    if facts_a != facts_b:
        parts = [
            f"{k}: {facts_a.get(k)!r} → {facts_b.get(k)!r}" for k in facts_a if facts_a[k] != facts_b.get(k)
        ]
        return [Change("signature.certificate", True, _SIGNATURE_PCRS, "; ".join(parts))]
    if a.signature == b.signature:
        return []
    return [Change("signature", False, _UNMEASURED, _same_certificate_reason(a, b))]


def _same_certificate_reason(a: EifImage, b: EifImage) -> str:
    sa, sb = a.signature, b.signature
    if sa is None or sb is None:
        return "signature section differs"
    if sa.register_value != sb.register_value:
        return "same certificate; it signs a different PCR0"
    return "same certificate and signed PCR0; the signature value differs (ECDSA with a random nonce)"


# ---------------------------------------------------------------------------------------------
# metadata and header: not measured


def metadata_changes(a: EifImage, b: EifImage) -> list[Change]:
    if a.metadata_bytes == b.metadata_bytes:
        return []
    ja = {} if a.metadata is None else a.metadata.to_json()
    jb = {} if b.metadata is None else b.metadata.to_json()
    if a.metadata is None or b.metadata is None:
        state = "removed" if b.metadata is None else "added"
        return [Change("metadata", False, _UNMEASURED, f"metadata section {state}")]
    flat_a = dict(_flatten("metadata", ja))
    flat_b = dict(_flatten("metadata", jb))
    changes = []
    for key in dict.fromkeys([*flat_a, *flat_b]):
        va, vb = flat_a.get(key, _MISSING), flat_b.get(key, _MISSING)
        if va != vb:
            changes.append(Change(_short_key(key), False, _UNMEASURED, _value_change(key, va, vb)))
    if not changes:
        changes.append(Change("metadata", False, _UNMEASURED, "same fields, different JSON bytes"))
    return changes


_MISSING: Final = object()


def _flatten(prefix: str, value: JsonValue) -> list[tuple[str, JsonValue]]:
    if isinstance(value, dict) and value:
        return [item for key, v in value.items() for item in _flatten(f"{prefix}.{key}", v)]
    return [(prefix, value)]


def _short_key(key: str) -> str:
    """``metadata.BuildMetadata.BuildTime`` reads as ``metadata.BuildTime``."""
    return key.replace("metadata.BuildMetadata.", "metadata.", 1)


def _value_change(key: str, va: object, vb: object) -> str:
    show = {id(_MISSING): "(absent)"}
    text_a, text_b = show.get(id(va), repr(va)), show.get(id(vb), repr(vb))
    what = f"{text_a} → {text_b}"
    for marker, label in ((".eifbuild.inputs.", "eifbuild input"), (".eifbuild.image.", "app image")):
        if marker in key:
            return f"{label} {key.split(marker, 1)[1]!r} changed: {what}"
    return what


def header_changes(a: EifSummary, b: EifSummary) -> list[Change]:
    ha, hb = a.image.header, b.image.header
    changes = [
        Change(f"header.{name}", False, _UNMEASURED, f"{getattr(ha, name)!r} → {getattr(hb, name)!r}")
        for name in ("version", "flags", "default_mem", "default_cpus", "reserved", "unused")
        if getattr(ha, name) != getattr(hb, name)
    ]
    if ha.flags != hb.flags and a.image.arch != b.image.arch:
        changes.append(Change("header.arch", False, _UNMEASURED, f"{a.image.arch} → {b.image.arch}"))
    changes += layout_changes(a.image, b.image)
    return changes


def layout_changes(a: EifImage, b: EifImage) -> list[Change]:
    order_a = [s.type.name.lower() for s in a.sections]
    order_b = [s.type.name.lower() for s in b.sections]
    changes = []
    if order_a != order_b:
        detail = f"{', '.join(order_a)} → {', '.join(order_b)}"
        changes.append(Change("sections", False, _UNMEASURED, f"section order: {detail}"))
    gaps_a, gaps_b = section_gaps(a).total, section_gaps(b).total
    if gaps_a != gaps_b:
        changes.append(Change("sections", False, _UNMEASURED, f"padding: {gaps_a} → {gaps_b} bytes"))
    return changes
