"""Writing EIFs: byte-identical to AWS eif_build, streaming, atomic, measured in the same pass.

Layout (spec §3.3): kernel, cmdline, metadata, ramdisks in order, then the signature when signing;
no padding. Every input is read once, in 1 MiB chunks: each chunk is written, CRC'd and hashed
into the PCRs together; with a second CPU the CRC and PCR2 run on a second thread while the caller
reads, hashes PCR0/PCR1 and writes (:class:`~eifbuild.eif.pcr.PcrHashers`). The header comes
first in the file but depends on the signature's size, which depends on PCR0, so a placeholder is
written first and the header at the end; its CRC is the header prefix's CRC combined with the
streamed sections' CRC (:func:`~eifbuild.eif.pcr.crc32_combine`). The format itself is
:mod:`eifbuild.eif.format`.
"""

from __future__ import annotations

import dataclasses
import math
import stat
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING, Final

from .. import log
from ..errors import FileAccessError, InputError, UsageError
from ..util import fsutil
from .format import (
    HEADER_SIZE,
    MAX_SECTIONS,
    SECTION_HEADER_SIZE,
    EifHeader,
    SectionType,
    arch_flags,
    pcr_role,
    read_exactly,
    section_header,
)
from .metadata import EIF_BUILD_TOOL, EIF_BUILD_TOOL_VERSION, JsonValue, make_metadata
from .pcr import DEFAULT_ALGO, HashAlgo, Measurements, PcrHashers, crc32_combine, parallel_hashing

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Sequence

    from ..arch import Arch
    from .buildtime import BuildTime
    from .metadata import EifMetadata
    from .pcr import PcrRole
    from .sign import Signer

MIB: Final = 1 << 20
ENCLAVE_MEMORY_EIF_SIZE_RATIO: Final = 4  # nitro-cli run-enclave refuses less (error E26)


def min_enclave_memory_mib(eif_size: int) -> int:
    """The smallest ``--memory`` nitro-cli accepts for an EIF of ``eif_size`` bytes.

    nitro-cli requires 4 * size <= memory and reports the minimum as 4 * ceil(size / MiB), which
    is what this returns (always enough).
    """
    return ENCLAVE_MEMORY_EIF_SIZE_RATIO * math.ceil(eif_size / MIB)


@dataclass(frozen=True)
class SectionSource:
    """Where a section's data comes from: in-memory bytes, or ``size`` bytes of a file at ``offset``."""

    type: SectionType
    size: int
    data: bytes | None = None
    path: Path | None = None
    offset: int = 0

    @classmethod
    def from_bytes(cls, kind: SectionType, data: bytes) -> SectionSource:
        return cls(kind, len(data), data=data)

    @classmethod
    def from_file(cls, kind: SectionType, path: Path) -> SectionSource:
        try:
            st = path.stat()
        except OSError as exc:
            msg = f"cannot read {kind.name.lower()} file: {exc.strerror}"
            raise FileAccessError(msg, path=path) from None
        if not stat.S_ISREG(st.st_mode):
            msg = f"{kind.name.lower()} is not a regular file"
            raise FileAccessError(msg, path=path)
        return cls(kind, st.st_size, path=path)

    def chunks(self) -> Iterator[bytes]:
        if self.path is None:
            yield self.data or b""
            return
        try:
            with self.path.open("rb") as fh:
                fh.seek(self.offset)
                yield from read_exactly(fh, self.size, fsutil.CHUNK, self._shrank)
        except OSError as exc:
            msg = f"cannot read {self.type.name.lower()} file: {exc.strerror}"
            raise FileAccessError(msg, path=self.path) from None

    def _shrank(self, left: int) -> Exception:
        msg = f"file shrank while it was being packed: {left} of {self.size} bytes missing"
        return FileAccessError(msg, path=self.path)


def write_sections(
    out: IO[bytes],
    sections: Sequence[SectionSource],
    *,
    flags: int,
    signer: Signer | None = None,
    algo: HashAlgo = DEFAULT_ALGO,
) -> Measurements:
    """Write a complete EIF with ``sections`` (plus a signature when ``signer``) to seekable ``out``.

    PCRs follow the sections' roles: kernel, cmdline and the first ramdisk go into PCR0 and PCR1,
    later ramdisks into PCR0 and PCR2. The signature, if any, is appended last and signs PCR0.
    """
    count = len(sections) + (signer is not None)
    if count > MAX_SECTIONS:
        msg = f"{count} sections: an EIF holds at most {MAX_SECTIONS}"
        raise UsageError(msg)
    out.write(bytes(HEADER_SIZE))  # placeholder: the header needs the signature's size
    stream = _SectionStream(out)
    first_ramdisk = next((s for s in sections if s.type == SectionType.RAMDISK), None)
    with (
        PcrHashers(algo, threaded=parallel_hashing(), side=stream.update_crc) as hashers,
        log.progress("pack EIF", sum(s.size for s in sections)) as progress,
    ):
        for source in sections:
            role = pcr_role(source.type, first_ramdisk=source is first_ramdisk)
            stream.add(source, role, hashers.feed, progress.update)
        measurements = hashers.finish()  # the worker is done: the CRC is complete
    if signer is not None:
        from .sign import certificate_pcr, signature_section_for  # noqa: PLC0415 - crypto only when signing

        signature = signature_section_for(signer, bytes.fromhex(measurements.pcr0))
        stream.add(SectionSource.from_bytes(SectionType.SIGNATURE, signature), None, stream.crc_only)
        pcr8 = certificate_pcr(signer.certificate.parsed, algo)
        measurements = dataclasses.replace(measurements, pcr8=pcr8)
    header = EifHeader.build(flags=flags, offsets=stream.offsets, sizes=stream.sizes)
    crc = crc32_combine(zlib.crc32(header.crc_prefix()), stream.crc, stream.end - HEADER_SIZE)
    out.seek(0)
    out.write(dataclasses.replace(header, crc=crc).pack())
    out.seek(stream.end)
    return measurements


class _SectionStream:
    """Appends sections after the header placeholder, tracking the table and the running CRC.

    Each chunk goes to ``feed`` (:meth:`PcrHashers.feed`, which CRCs it through :meth:`update_crc`,
    on its worker thread when threaded) before it is written, so the worker's share starts first.
    """

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.offsets: list[int] = []
        self.sizes: list[int] = []
        self.crc = 0
        self.end = HEADER_SIZE

    def update_crc(self, chunk: bytes) -> None:
        self.crc = zlib.crc32(chunk, self.crc)

    def crc_only(self, chunk: bytes, role: PcrRole | None) -> None:  # a feed's shape: role unused
        self.update_crc(chunk)

    def add(
        self,
        source: SectionSource,
        role: PcrRole | None,
        feed: Callable[[bytes, PcrRole | None], None],
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.offsets.append(self.end)
        self.sizes.append(source.size)
        head = section_header(source.type, source.size)
        feed(head, None)  # the section header is CRC'd, never measured
        self.out.write(head)
        for chunk in source.chunks():
            feed(chunk, role)
            self.out.write(chunk)
            if progress is not None:
                progress(len(chunk))
        self.end += SECTION_HEADER_SIZE + source.size


def eif_sections(
    *, kernel: Path, cmdline: str, ramdisks: Sequence[Path], metadata: EifMetadata | bytes
) -> list[SectionSource]:
    """The section list eif_build writes: kernel, cmdline, metadata, ramdisks."""
    if not ramdisks:
        msg = "at least one ramdisk is required"
        raise UsageError(msg, key="ramdisk")
    if "\0" in cmdline:
        msg = "the kernel command line contains a NUL character"
        raise InputError(msg, key="cmdline")
    meta = metadata if isinstance(metadata, bytes) else metadata.to_bytes()
    return [
        SectionSource.from_file(SectionType.KERNEL, Path(kernel)),
        SectionSource.from_bytes(SectionType.CMDLINE, cmdline.encode("utf-8")),
        SectionSource.from_bytes(SectionType.METADATA, meta),
        *(SectionSource.from_file(SectionType.RAMDISK, Path(r)) for r in ramdisks),
    ]


def write_eif(
    output: Path,
    *,
    kernel: Path,
    cmdline: str,
    ramdisks: Sequence[Path],
    metadata: EifMetadata | bytes,
    arch: Arch,
    signer: Signer | None = None,
    algo: HashAlgo = DEFAULT_ALGO,
) -> Measurements:
    """Write an EIF as eif_build would, atomically (temp file beside ``output``, then rename)."""
    sections = eif_sections(kernel=kernel, cmdline=cmdline, ramdisks=ramdisks, metadata=metadata)
    with fsutil.atomic_write(output, big=True) as fh:
        return write_sections(fh, sections, flags=arch_flags(arch), signer=signer, algo=algo)


@dataclass(frozen=True)
class PackRequest:
    """What goes into an EIF. The metadata fields default as :func:`~.metadata.make_metadata`
    says (kernel file name, SOURCE_DATE_EPOCH, the kernel config's header, eif_build's names)."""

    output: Path
    kernel: Path
    cmdline: str
    ramdisks: Sequence[Path]
    arch: Arch
    name: str | None = None
    version: str | None = None
    build_time: BuildTime | None = None
    build_tool: str = EIF_BUILD_TOOL
    build_tool_version: str = EIF_BUILD_TOOL_VERSION
    operating_system: str | None = None
    kernel_version: str | None = None
    kernel_config: Path | None = None
    custom: JsonValue = None
    signer: Signer | None = None
    algo: HashAlgo = DEFAULT_ALGO


def pack(request: PackRequest) -> Measurements:
    """Write the EIF ``request`` describes, atomically, and return its PCRs."""
    metadata = make_metadata(
        kernel=request.kernel,
        name=request.name,
        version=request.version,
        build_time=request.build_time,
        build_tool=request.build_tool,
        build_tool_version=request.build_tool_version,
        operating_system=request.operating_system,
        kernel_version=request.kernel_version,
        kernel_config=request.kernel_config,
        custom=request.custom,
    )
    return write_eif(
        request.output,
        kernel=request.kernel,
        cmdline=request.cmdline,
        ramdisks=request.ramdisks,
        metadata=metadata,
        arch=request.arch,
        signer=request.signer,
        algo=request.algo,
    )


def sign_eif(
    path: Path, signer: Signer, *, output: Path | None = None, algo: HashAlgo = DEFAULT_ALGO
) -> Measurements:
    """(Re-)sign an EIF: drop any signature section, append a new one, rewrite header and CRC.

    Every other section is copied unchanged and in order, so PCR0/1/2 stay the same. ``output``
    defaults to ``path`` (replaced atomically).
    """
    from .reader import read_eif  # noqa: PLC0415 - the reader's COSE code only when re-signing

    image = read_eif(path)
    sources = [
        SectionSource(s.type, s.size, path=image.path, offset=s.data_offset)
        for s in image.sections
        if s.type != SectionType.SIGNATURE
    ]
    with fsutil.atomic_write(output or path, big=True) as fh:
        return write_sections(fh, sources, flags=image.header.flags, signer=signer, algo=algo)
