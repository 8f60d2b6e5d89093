"""What ``diff`` compares: one streaming pass over an EIF gives a summary of every section, down to
each ramdisk member's header fields and content hash.

Memory stays bounded by a few MiB plus the member index: sections are read in CHUNK pieces, a gzip
ramdisk is decompressed on the fly, and only small contents are kept (symlink targets, ``/cmd`` and
``/env``). The pass is :func:`eifbuild.eif.scan`'s: the sections are summarised from the bytes it
reads for the PCRs and the CRC.
"""

from __future__ import annotations

import dataclasses
import hashlib
import stat
from collections import defaultdict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from ..eif import SectionType, pcr_role, scan
from ..util.fsutil import CHUNK
from ._stream import Container, SectionStream, ramdisk_members, sha256_of

if TYPE_CHECKING:
    from pathlib import Path

    from ..eif import EifImage, EifMetadata, HashAlgo, Measurements, Section
    from ..ramdisk import CpioMember
    from ._stream import Source

CONFIG_FILES: Final = ("cmd", "env")  # the app ramdisk's argv and environment, kept to show entries
CONFIG_MAX: Final = 1 << 20
_KERNEL_HEAD: Final = 1 << 16
_LINUX_VERSION: Final = b"Linux version "
_KINDS: Final = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFCHR: "char device",
    stat.S_IFBLK: "block device",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
}


def member_kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), f"type {stat.S_IFMT(mode):#o}")


def member_path(name: str) -> str:
    """A member's name as the kernel's unpacker places it: relative to the root."""
    while name.startswith(("./", "/")):
        name = name[2:] if name.startswith("./") else name[1:]
    return name or "."


@dataclass(frozen=True)
class MemberSummary:
    """One cpio member: its header fields and a hash of its content (hard links share the group's)."""

    path: str
    position: int
    kind: str
    mode: int  # permission bits only
    uid: int
    gid: int
    mtime: int
    size: int
    sha256: str
    ino: int
    nlink: int
    dev: tuple[int, int]
    rdev: tuple[int, int]
    target: str | None = None  # a symlink's
    links: tuple[str, ...] = ()  # the other paths of its hard-link group
    text: bytes | None = None  # /cmd and /env


@dataclass(frozen=True)
class RamdiskSummary:
    index: int  # among the ramdisks
    section: int
    size: int
    sha256: str
    container: Container
    cpio_sha256: str
    members: tuple[MemberSummary, ...]
    trailing: int
    trailing_nonzero: bool

    @property
    def role(self) -> str:
        """``app`` (has /cmd, /env or rootfs/), ``bootstrap`` (has /init or /nsm.ko), else by position."""
        paths = {m.path for m in self.members}
        if paths & {"cmd", "env", "rootfs"}:
            return "app"
        if paths & {"init", "nsm.ko"}:
            return "bootstrap"
        return "bootstrap" if self.index == 0 else "app"

    @property
    def label(self) -> str:
        return f"ramdisk[{self.index}] ({self.role})"


@dataclass(frozen=True)
class KernelSummary:
    size: int
    sha256: str
    version: str | None


@dataclass(frozen=True)
class EifSummary:
    image: EifImage
    measurements: Measurements
    crc: int
    kernel: KernelSummary
    ramdisks: tuple[RamdiskSummary, ...]

    @property
    def path(self) -> Path:
        return self.image.path

    @property
    def metadata(self) -> EifMetadata | None:
        return self.image.metadata


def summarize(image: EifImage, algo: HashAlgo) -> EifSummary:
    """Read the EIF once: its PCRs, its CRC and the section summaries all come from the same bytes."""
    visitor = _Summarizer(image)
    # the sections' own sha256 on the scan's worker, beside PCR2 and the CRC: this thread parses
    # and hashes each ramdisk member
    result = scan(image, (algo,), visit=visitor.visit, section_sha256=True)
    assert visitor.kernel is not None  # noqa: S101 - read_eif guarantees one kernel, and scan visits it
    digests = result.section_sha256
    kernel = dataclasses.replace(visitor.kernel, sha256=digests[image.kernel.index])
    ramdisks = tuple(_with_digest(r, digests[r.section]) for r in visitor.ramdisks)
    return EifSummary(image, result.measurements[algo], result.crc, kernel, ramdisks)


def _with_digest(ramdisk: RamdiskSummary, sha256: str) -> RamdiskSummary:
    """``ramdisk`` with its section's sha256 (and an uncompressed archive's: the same bytes)."""
    cpio_sha256 = sha256 if ramdisk.container.compression == "none" else ramdisk.cpio_sha256
    return dataclasses.replace(ramdisk, sha256=sha256, cpio_sha256=cpio_sha256)


class _Summarizer:
    """The scan's visitor: the kernel's and each ramdisk's summary, from the bytes as they pass."""

    def __init__(self, image: EifImage) -> None:
        self.image = image
        self.kernel: KernelSummary | None = None
        self.ramdisks: list[RamdiskSummary] = []

    def visit(self, section: Section, data: Source) -> None:
        # hashed=False: the scan hashes each section (summarize fills in the digests afterwards)
        if section.type == SectionType.KERNEL:
            stream = SectionStream(data, section, f"{self.image.path}, kernel", hashed=False)
            self.kernel = summarize_kernel(section, stream)
        elif section.type == SectionType.RAMDISK:
            index = len(self.ramdisks)
            stream = SectionStream(data, section, f"{self.image.path}, ramdisk[{index}]", hashed=False)
            self.ramdisks.append(summarize_ramdisk(section, index, stream))


def section_pcrs(image: EifImage, section: Section) -> tuple[str, ...]:
    """The PCRs a section's bytes are measured into (signature: PCR8, by its certificate)."""
    if section.type == SectionType.SIGNATURE:
        return ("PCR8",)
    first = image.ramdisks[0].index
    role = pcr_role(section.type, first_ramdisk=section.index == first)
    return {"boot": ("PCR0", "PCR1"), "app": ("PCR0", "PCR2"), None: ()}[role]


# ---------------------------------------------------------------------------------------------
# kernel


def summarize_kernel(section: Section, stream: SectionStream) -> KernelSummary:
    head = stream.read(_KERNEL_HEAD)
    version = _bzimage_version(head)
    finder = _VersionFinder(head)
    while chunk := stream.read(CHUNK):
        if version is None and finder.found is None:
            finder.feed(chunk)
    return KernelSummary(section.size, sha256_of(stream.hasher), version or finder.found)


def _bzimage_version(head: bytes) -> str | None:
    """The version string an x86 bzImage's setup header points at (boot protocol ≥ 2.00)."""
    if head[0x202:0x206] != b"HdrS" or len(head) < 0x210:
        return None
    start = int.from_bytes(head[0x20E:0x210], "little") + 0x200
    return _c_string(head[start : start + 256])


class _VersionFinder:
    """The first ``Linux version …`` string in an uncompressed kernel (an arm64 Image)."""

    def __init__(self, first: bytes) -> None:
        self.tail = b""
        self.found: str | None = None
        self.feed(first)

    def feed(self, chunk: bytes) -> None:
        window = self.tail + chunk
        at = window.find(_LINUX_VERSION)
        if at >= 0 and (window.find(b"\0", at) >= 0 or len(window) - at > 256):
            self.found = _c_string(window[at : at + 256])
        self.tail = window[-300:]


def _c_string(raw: bytes) -> str | None:
    text = raw.split(b"\0", 1)[0].split(b"\n", 1)[0].decode("utf-8", "replace").strip()
    return text or None


# ---------------------------------------------------------------------------------------------
# ramdisks


def _keep_content(member: CpioMember) -> bool:
    if stat.S_ISLNK(member.mode):
        return True
    return member_path(member.name) in CONFIG_FILES and member.size <= CONFIG_MAX


def summarize_ramdisk(section: Section, index: int, raw: SectionStream) -> RamdiskSummary:
    with ramdisk_members(raw, data=_keep_content) as (streams, members):
        found = [_member(m, position) for position, m in enumerate(members)]
    return RamdiskSummary(
        index=index,
        section=section.index,
        size=section.size,
        sha256=sha256_of(streams.raw.hasher),
        container=streams.container,
        cpio_sha256=streams.cpio_sha256,
        members=_with_link_groups(found),
        trailing=streams.trailing,
        trailing_nonzero=streams.trailing_nonzero,
    )


def _member(m: CpioMember, position: int) -> MemberSummary:
    path = member_path(m.name)
    is_link = stat.S_ISLNK(m.mode)
    return MemberSummary(
        path=path,
        position=position,
        kind=member_kind(m.mode),
        mode=stat.S_IMODE(m.mode),
        uid=m.uid,
        gid=m.gid,
        mtime=m.mtime,
        size=m.size,
        sha256=m.sha256 or hashlib.sha256(m.data).hexdigest(),
        ino=m.ino,
        nlink=m.nlink,
        dev=m.dev,
        rdev=m.rdev,
        target=m.data.decode("utf-8", "surrogateescape") if is_link else None,
        text=m.data if not is_link and path in CONFIG_FILES else None,
    )


def _with_link_groups(members: list[MemberSummary]) -> tuple[MemberSummary, ...]:
    """Hard links (same inode, nlink > 1) share one group: newc stores the content once (GNU cpio
    in the last member), so each member gets the group's content hash and size."""
    groups: dict[int, list[MemberSummary]] = defaultdict(list)
    for m in members:
        if m.nlink > 1 and m.kind != "dir":
            groups[m.ino].append(m)
    return tuple(
        _in_group(m, groups.get(m.ino) if m.nlink > 1 and m.kind != "dir" else None) for m in members
    )


def _in_group(member: MemberSummary, group: list[MemberSummary] | None) -> MemberSummary:
    if not group or len(group) < 2:
        return member
    holder = max(group, key=lambda g: g.size)
    links = tuple(sorted(g.path for g in group if g is not member))
    return dataclasses.replace(member, links=links, sha256=holder.sha256, size=holder.size)


def same_bytes(a: Path, b: Path) -> bool:
    """Whether two files hold identical bytes (stops at the first differing chunk)."""
    try:
        if a.stat().st_size != b.stat().st_size:
            return False
        with a.open("rb") as fa, b.open("rb") as fb:
            while chunk := fa.read(CHUNK):
                if chunk != fb.read(CHUNK):
                    return False
    except OSError:
        return False  # read_eif names the unreadable file
    return True
