"""``eifbuild extract``: every section of an EIF as a file, plus a manifest that says how ``pack``
(and ``sign``) make the same bytes again, and with ``unpack`` each ramdisk's tree beside it.

Files: ``kernel``, ``cmdline`` (the exact bytes), ``metadata.json`` (the exact section),
``custom-metadata.json`` (for ``pack --metadata``), ``ramdisk-<i>.cpio`` or ``.cpio.gz``, and for a
signed EIF ``signing-certificate.pem`` (as embedded), ``signature.cose`` (the COSE_Sign1 structure)
and ``signature-section.cbor``; then ``manifest.json``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ..eif import (
    CUSTOM_METADATA_MAX_SIZE,
    DEFAULT_CPUS,
    DEFAULT_MEM,
    EIF_VERSION,
    FLAG_AARCH64,
    SectionType,
    dumps,
    read_eif,
    section_gaps,
)
from ..errors import FileAccessError, UsageError
from ..util import fsutil
from ._stream import CPIO_MAGIC, GZIP_MAGIC, open_section
from ._unpack import unpack_ramdisk
from .diff import certificate_facts

if TYPE_CHECKING:
    from collections.abc import Callable
    from pathlib import Path

    from ..eif import EifImage, JsonValue, Section
    from ._stream import SectionStream

MANIFEST: Final = "manifest.json"
REBUILT: Final = "rebuilt.eif"
_NAMES: Final = {
    SectionType.KERNEL: "kernel",
    SectionType.CMDLINE: "cmdline",
    SectionType.METADATA: "metadata.json",
    SectionType.SIGNATURE: "signature-section.cbor",
}
_CANONICAL_HEADER: Final = {
    "version": EIF_VERSION,
    "default_mem": DEFAULT_MEM,
    "default_cpus": DEFAULT_CPUS,
    "reserved": 0,
    "unused": 0,
}
_ORDER_TEXT: Final = "kernel, cmdline, metadata, ramdisks, [signature]"


@dataclass(frozen=True)
class ExtractResult:
    directory: Path
    manifest: dict[str, JsonValue]
    pack_args: list[str]  # ``eifbuild`` arguments, run in ``directory``
    differences: list[str]  # why ``pack_args`` cannot give the same bytes (empty: they do)


def extract(eif: Path, out: Path, *, unpack: bool = False, preserve_special: bool = False) -> ExtractResult:
    """Write the sections of ``eif`` into the new or empty directory ``out`` (with ``unpack`` each
    ramdisk's tree too: device nodes, fifos and setuid/setgid bits only with ``preserve_special``)."""
    image = read_eif(eif)
    _prepare(out)
    unpacked: list[JsonValue] = []

    def unpack_into(section: Section, raw: SectionStream) -> None:  # in the pass that writes its file
        index = image.ramdisks.index(section)
        root = out / f"ramdisk-{index}"
        listing = unpack_ramdisk(image, section, index, root, preserve_special=preserve_special, raw=raw)
        unpacked.append(listing)

    files = [_write_section(image, s, out, unpack_into if unpack else None) for s in image.sections]
    custom = _custom_metadata_file(image, out)
    signature = _signature_files(image, out)
    ramdisk_files = [f["file"] for f in files if f["type"] == "ramdisk"]
    pack_args = _pack_args(image, ramdisk_files, custom)
    differences = _pack_differences(image)
    manifest: dict[str, JsonValue] = {
        "source": str(eif),
        "arch": image.arch,
        "eif_version": image.header.version,
        "sections": list(files),
        "pack": list(pack_args),
        "pack_reproduces": not differences,
        "pack_differences": list(differences),
    }
    if signature:
        manifest["signature"] = signature
    if unpack:
        manifest["unpacked"] = unpacked
    _write(out / MANIFEST, (dumps(manifest, indent=2) + "\n").encode("utf-8"))
    return ExtractResult(out, manifest, pack_args, differences)


def _prepare(out: Path) -> None:
    try:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            msg = "the output directory exists and is not empty"
            raise UsageError(msg, path=out, key="--output")
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        msg = f"cannot create the output directory: {exc.strerror or exc}"
        raise FileAccessError(msg, path=out) from None


def _write(path: Path, data: bytes) -> None:
    try:
        with fsutil.atomic_write(path) as fh:
            fh.write(data)
    except OSError as exc:
        msg = f"cannot write: {exc.strerror or exc}"
        raise FileAccessError(msg, path=path) from None


def _section_file(image: EifImage, section: Section, head: bytes) -> str:
    if section.type != SectionType.RAMDISK:
        return _NAMES[section.type]
    index = image.ramdisks.index(section)
    suffix = ".cpio.gz" if head.startswith(GZIP_MAGIC) else ".cpio" if head.startswith(CPIO_MAGIC) else ".img"
    return f"ramdisk-{index}{suffix}"


def _write_section(
    image: EifImage,
    section: Section,
    out: Path,
    unpack: Callable[[Section, SectionStream], None] | None = None,
) -> dict[str, JsonValue]:
    """Write ``section`` to its file, hashed as it passes; a ramdisk is unpacked by ``unpack`` (when
    given) from the same read: the file gets every byte the unpacker reads, then the rest."""
    kind = section.type.name.lower()
    with open_section(image, section, kind) as stream:
        name = _section_file(image, section, stream.peek(len(GZIP_MAGIC) + len(CPIO_MAGIC)))
        try:
            with fsutil.atomic_write(out / name, big=True) as fh:
                stream.copy = fh
                if unpack is not None and section.type == SectionType.RAMDISK:
                    unpack(section, stream)
                while stream.read():
                    pass
        except OSError as exc:
            msg = f"cannot write: {exc.strerror or exc}"
            raise FileAccessError(msg, path=out / name) from None
        return {
            "index": section.index,
            "type": kind,
            "file": name,
            "size": section.size,
            "sha256": stream.hasher.hexdigest(),
        }


def _custom_metadata_file(image: EifImage, out: Path) -> str | None:
    metadata = image.metadata
    if metadata is None or metadata.custom is None:
        return None
    name = "custom-metadata.json"
    _write(out / name, dumps(metadata.custom).encode("utf-8"))
    return name


def _signature_files(image: EifImage, out: Path) -> dict[str, JsonValue]:
    signature = image.signature
    if signature is None:
        return {}
    _write(out / "signing-certificate.pem", signature.certificate_pem)
    _write(out / "signature.cose", signature.cose)
    facts: dict[str, JsonValue] = {**certificate_facts(image)}
    return {
        "certificate": "signing-certificate.pem",
        "cose": "signature.cose",
        **facts,
        "sign": [
            "sign",
            REBUILT,
            "--signing-certificate",
            "signing-certificate.pem",
            "--private-key",
            "KEY.pem",
        ],
    }


def _pack_args(image: EifImage, ramdisks: list[JsonValue], custom: str | None) -> list[str]:
    args = ["pack", "--kernel", "kernel", "--cmdline", image.cmdline]
    for ramdisk in ramdisks:
        args += ["--ramdisk", str(ramdisk)]
    args += ["--arch", image.arch]
    metadata = image.metadata
    if metadata is not None:
        args += [
            "--name", metadata.image_name,
            "--version", metadata.image_version,
            "--build-time", metadata.build_time,
            "--build-tool", metadata.build_tool,
            "--build-tool-version", metadata.build_tool_version,
            "--img-os", metadata.operating_system,
            "--img-kernel", metadata.kernel_version,
        ]  # fmt: skip
    if custom is not None:
        args += ["--metadata", custom]
    return [*args, "--output", REBUILT]


def _pack_differences(image: EifImage) -> list[str]:
    """Why ``pack`` with the manifest's arguments would not give these bytes (signature aside)."""
    header = image.header
    found = [
        f"header {name} is {getattr(header, name)}, pack writes {value}"
        for name, value in _CANONICAL_HEADER.items()
        if getattr(header, name) != value
    ]
    if header.flags & ~FLAG_AARCH64:
        found.append(f"header flags {header.flags:#06x}: pack writes only the arch bit")
    kinds = [s.type for s in image.sections if s.type != SectionType.SIGNATURE]
    expected = [SectionType.KERNEL, SectionType.CMDLINE, SectionType.METADATA]
    if kinds[:3] != expected or image.sections[-1].type not in (SectionType.RAMDISK, SectionType.SIGNATURE):
        found.append(f"sections are not in eif_build's order ({_ORDER_TEXT})")
    gaps = section_gaps(image)
    if gaps.before:
        found.append("there are gaps between sections")
    if gaps.trailing:
        found.append("there are bytes after the last section")
    found += _cmdline_problem(image) + _metadata_problem(image)
    return found


def _cmdline_problem(image: EifImage) -> list[str]:
    try:
        text = image.cmdline_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return ["the cmdline is not UTF-8"]
    return ["the cmdline contains a NUL"] if "\0" in text else []


def _metadata_problem(image: EifImage) -> list[str]:
    metadata = image.metadata
    if metadata is None or image.metadata_bytes is None:
        return ["no metadata section (pack always writes one)"]
    found = []
    if metadata.docker_info is not None:
        found.append("DockerInfo is not null (nitro-cli's; pack writes null)")
    custom = metadata.custom
    if custom is not None and (
        not isinstance(custom, dict) or len(dumps(custom).encode()) > CUSTOM_METADATA_MAX_SIZE
    ):
        found.append("CustomMetadata is not an object of at most 4096 bytes")
    rebuilt = dataclasses.replace(metadata, docker_info=None).to_bytes()
    if not found and rebuilt != image.metadata_bytes:
        found.append("the metadata JSON is not in eif_build's serialisation")
    return found
