"""Bad EIFs: every malformed input gives one precise line (exit 2), softer defects a verify problem (exit 1)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from eifbuild import cli
from eifbuild.eif import SectionType, read_eif, section_gaps
from eifbuild.eif.format import EifHeader
from eifbuild.errors import EifFormatError
from eifbuild.inspect import diff_files, extract

Capture = pytest.CaptureFixture[str]

META = (
    b'{"ImageName":"n","ImageVersion":"v","BuildMetadata":{"BuildTime":"t","BuildTool":"b",'
    b'"BuildToolVersion":"1","OperatingSystem":"OS","KernelVersion":"k"},"DockerInfo":null,"CustomMetadata":null}'
)
GOOD: list[tuple[int, bytes]] = [(1, b"KERNEL"), (2, b"console=ttyS0"), (5, META), (3, b"RD0"), (3, b"RD1")]


@dataclass
class Layout:
    """An EIF built by hand: sections (type, data) plus deliberate defects."""

    sections: list[tuple[int, bytes]] = field(default_factory=lambda: list(GOOD))
    gap_before: dict[int, int] = field(default_factory=dict)  # section index -> zero bytes inserted before it
    offsets: dict[int, int] = field(default_factory=dict)  # overrides of table entries
    sizes: dict[int, int] = field(default_factory=dict)
    header_sizes: dict[int, int] = field(default_factory=dict)  # overrides of a section header's size
    section_flags: dict[int, int] = field(default_factory=dict)
    num_sections: int | None = None
    flags: int = 0
    version: int = 4
    magic: bytes = b".eif"
    trailing: bytes = b""
    fix_crc: bool = True

    def build(self) -> bytes:
        body = bytearray()
        offsets, sizes = [], []
        for index, (kind, data) in enumerate(self.sections):
            body += bytes(self.gap_before.get(index, 0))
            offsets.append(548 + len(body))
            sizes.append(len(data))
            size = self.header_sizes.get(index, len(data))
            body += struct.pack(">HHQ", kind, self.section_flags.get(index, 0), size) + data
        body += self.trailing
        for index, value in self.offsets.items():
            offsets += [0] * (index + 1 - len(offsets))
            offsets[index] = value
        for index, value in self.sizes.items():
            sizes += [0] * (index + 1 - len(sizes))
            sizes[index] = value
        header = EifHeader.build(
            flags=self.flags, offsets=offsets[: len(self.sections)], sizes=sizes[: len(self.sections)]
        )
        raw = bytearray(header.crc_prefix())
        struct.pack_into(">4sH", raw, 0, self.magic, self.version)
        struct.pack_into(
            ">H", raw, 26, len(self.sections) if self.num_sections is None else self.num_sections
        )
        struct.pack_into(">32Q", raw, 28, *(offsets + [0] * 32)[:32])
        struct.pack_into(">32Q", raw, 284, *(sizes + [0] * 32)[:32])
        crc = zlib.crc32(bytes(raw) + bytes(body)) if self.fix_crc else 0
        return bytes(raw) + crc.to_bytes(4, "big") + bytes(body)


def _write(tmp_path: Path, layout: Layout | bytes) -> Path:
    path = tmp_path / "bad.eif"
    path.write_bytes(layout if isinstance(layout, bytes) else layout.build())
    return path


def test_hand_built_layout_is_sound(tmp_path: Path, capsys: Capture) -> None:
    path = _write(tmp_path, Layout())
    assert cli.main(["verify", str(path)]) == 0
    assert capsys.readouterr().out == f"{path}: OK\n"


def _signature_cbor(entry: bytes) -> bytes:
    return b"\x81" + entry


UINTS_OF_ABC = b"\x83\x18\x61\x18\x62\x18\x63"  # [97, 98, 99]

READ_ERRORS: dict[str, tuple[Layout | bytes, str]] = {
    "empty file": (b"", "truncated: 0 bytes, an EIF header needs 548"),
    "truncated header": (Layout().build()[:300], "truncated: 300 bytes, an EIF header needs 548"),
    "wrong magic": (
        Layout(magic=b"\x7fELF"),
        "not an EIF file: magic is 7f454c46, expected 2e656966 ('.eif')",
    ),
    "version 5": (Layout(version=5), "offset 4: unsupported EIF version 5: expected 2 to 4"),
    "version 1": (Layout(version=1), "offset 4: unsupported EIF version 1: expected 2 to 4"),
    "33 sections": (Layout(num_sections=33), "offset 26: header claims 33 sections: an EIF holds at most 32"),
    "truncated sections": (
        Layout().build()[:700],
        "section 2, offset 591: data ends at 795, past the end of the file (700 bytes)",
    ),
    "section header past EOF": (
        Layout(offsets={4: 10_000}),
        "section 4: section header at 10000 is past the end of the file (825 bytes)",
    ),
    "data past EOF": (
        Layout(sizes={4: 1000}, header_sizes={4: 1000}),
        "section 4, offset 810: data ends at 1822, past the end of the file (825 bytes)",
    ),
    "huge size": (
        Layout(sizes={3: 2**64 - 1}, header_sizes={3: 2**64 - 1}),
        f"section 3, offset 795: data ends at {795 + 12 + 2**64 - 1}, past the end of the file (825 bytes)",
    ),
    "overlapping sections": (
        Layout(offsets={4: 800}),
        "section 4, offset 800: starts at 800, before the end of the previous section or header at 810: "
        "sections must be in file order and must not overlap",
    ),
    "section inside the header": (
        Layout(offsets={0: 100}),
        "section 0, offset 100: starts at 100, before the end of the previous section or header at 548: "
        "sections must be in file order and must not overlap",
    ),
    "unknown section type": (
        Layout(sections=[*GOOD, (9, b"x")]),
        "section 5, offset 825: unknown section type 9: expected 1 to 5",
    ),
    "invalid section type 0": (
        Layout(sections=[(0, b""), *GOOD]),
        "section 0, offset 548: unknown section type 0: expected 1 to 5",
    ),
    "table disagrees with header": (
        Layout(header_sizes={1: 12}),
        "section 1, offset 566: section header says 12 bytes, the header table says 13",
    ),
    "no kernel": (Layout(sections=GOOD[1:]), "0 kernel sections: expected exactly one"),
    "two cmdlines": (Layout(sections=[*GOOD, (2, b"x")]), "2 cmdline sections: expected exactly one"),
    "no ramdisk": (Layout(sections=GOOD[:3]), "0 ramdisk sections: expected at least one"),
    "two metadata": (Layout(sections=[*GOOD, (5, META)]), "2 metadata sections: expected at most one"),
    "metadata not JSON": (
        Layout(sections=[*GOOD[:2], (5, b"{nope"), *GOOD[3:]]),
        "metadata section is not valid UTF-8 JSON: Expecting property name enclosed in double quotes: "
        "line 1 column 2 (char 1)",
    ),
    "metadata not UTF-8": (
        Layout(sections=[*GOOD[:2], (5, b'"\xff"'), *GOOD[3:]]),
        "metadata section is not valid UTF-8 JSON: 'utf-8' codec can't decode byte 0xff in position 1: "
        "invalid start byte",
    ),
    "metadata array": (
        Layout(sections=[*GOOD[:2], (5, b"[]"), *GOOD[3:]]),
        "metadata section is a JSON array, expected an object",
    ),
    "metadata lacks CustomMetadata": (
        Layout(sections=[*GOOD[:2], (5, META.replace(b',"CustomMetadata":null', b"")), *GOOD[3:]]),
        "metadata lacks key 'CustomMetadata'",
    ),
    "metadata wrong field type": (
        Layout(sections=[*GOOD[:2], (5, META.replace(b'"BuildTime":"t"', b'"BuildTime":1')), *GOOD[3:]]),
        "metadata BuildMetadata key 'BuildTime' is a JSON number, expected a string",
    ),
    "metadata NaN": (
        Layout(sections=[*GOOD[:2], (5, META.replace(b'"DockerInfo":null', b'"DockerInfo":NaN')), *GOOD[3:]]),
        "metadata section is not valid UTF-8 JSON: NaN is not valid JSON",
    ),
    "deeply nested metadata": (
        Layout(sections=[*GOOD[:2], (5, b"[" * 100_000), *GOOD[3:]]),
        "metadata section is not valid UTF-8 JSON: nested deeper than 128 levels",
    ),
    "signature not CBOR": (
        Layout(sections=[*GOOD, (4, b"\xff\xff")]),
        "signature section is not valid CBOR: ",
    ),
    "empty signature array": (
        Layout(sections=[*GOOD, (4, b"\x80")]),
        "signature section is not a non-empty CBOR array of maps",
    ),
    "certificate as byte string": (
        Layout(sections=[*GOOD, (4, _signature_cbor(b"\xa1\x73signing_certificate\x43abc"))]),
        "signature section 'signing_certificate' is not an array of byte values",
    ),
    "COSE not an array": (
        Layout(
            sections=[
                *GOOD,
                (
                    4,
                    _signature_cbor(b"\xa2\x73signing_certificate" + UINTS_OF_ABC + b"\x69signature\x81\x01"),
                ),
            ]
        ),
        "COSE_Sign1 is not an array of 4 (protected, unprotected, payload, signature)",
    ),
    "COSE not CBOR": (
        Layout(
            sections=[
                *GOOD,
                (
                    4,
                    _signature_cbor(
                        b"\xa2\x73signing_certificate" + UINTS_OF_ABC + b"\x69signature\x81\x18\xff"
                    ),
                ),
            ]
        ),
        "COSE_Sign1 is not valid CBOR: ",
    ),
    "signature too large": (
        Layout(sections=[*GOOD, (4, bytes(40_000))]),
        "signature section is 40000 bytes, over the 32768-byte limit",
    ),
}


@pytest.mark.parametrize("case", READ_ERRORS, ids=list(READ_ERRORS))
def test_malformed_files_are_one_line_errors(tmp_path: Path, capsys: Capture, case: str) -> None:
    layout, message = READ_ERRORS[case]
    path = _write(tmp_path, layout)
    with pytest.raises(EifFormatError) as err:
        read_eif(path)
    assert str(err.value).startswith(f"{path}: {message}")
    for command in (["verify"], ["describe"], ["pcrs"]):
        assert cli.main([*command, str(path)]) == 2
        captured = capsys.readouterr()
        assert captured.out == ""
        assert captured.err.startswith(f"error: {path}: {message}")
        assert captured.err.count("\n") == 1


def test_section_gaps_is_what_verify_extract_and_diff_see(tmp_path: Path) -> None:
    plain = _write(tmp_path, Layout()).rename(tmp_path / "plain.eif")
    gapped = _write(tmp_path, Layout(gap_before={3: 5}, trailing=b"junk"))
    image = read_eif(gapped)
    gaps = section_gaps(image)
    assert [(section.index, size) for section, size in gaps.before] == [(3, 5)]
    assert (gaps.trailing, gaps.total) == (4, 9)
    assert section_gaps(read_eif(plain)).total == 0
    differences = extract(gapped, tmp_path / "x").differences
    assert "there are gaps between sections" in differences
    assert "there are bytes after the last section" in differences
    padding = [
        c.detail for c in diff_files(plain, gapped, "sha384").changes if c.detail.startswith("padding")
    ]
    assert padding == ["padding: 0 → 9 bytes"]


def test_unreadable_paths(tmp_path: Path, capsys: Capture) -> None:
    assert cli.main(["describe", str(tmp_path / "missing.eif")]) == 2
    assert (
        capsys.readouterr().err
        == f"error: {tmp_path / 'missing.eif'}: cannot read EIF: No such file or directory\n"
    )
    assert cli.main(["verify", str(tmp_path)]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}: cannot read EIF: Is a directory\n"


VERIFY_PROBLEMS: dict[str, tuple[Layout, list[str]]] = {
    "gap between sections": (
        Layout(gap_before={3: 5}),
        [
            "section 3 starts at 800, 5 bytes after the previous one ends: nitro-cli's sequential reader cannot read gaps"
        ],
    ),
    "trailing bytes": (
        Layout(trailing=b"junk"),
        ["4 bytes after the last section: nitro-cli's sequential reader misreads them"],
    ),
    "unknown flag bits": (
        Layout(flags=0x41),
        ["header flags 0x0041 set unknown bits (only bit 0, aarch64, is defined)"],
    ),
    "section flags": (
        Layout(section_flags={1: 2}),
        ["section 1 (cmdline) has flags 0x0002, expected 0 (QEMU rejects it)"],
    ),
    "stray table entries": (
        Layout(offsets={7: 1}),
        ["section table entries after the first 5 are not zero"],
    ),
    "bad CRC": (
        Layout(fix_crc=False),
        [
            f"CRC mismatch: the header says 0x00000000, the contents give {zlib.crc32(Layout().build()[:544] + Layout().build()[548:]):#010x}"
        ],
    ),
    "v4 without metadata": (
        Layout(sections=[GOOD[0], GOOD[1], GOOD[3]]),
        ["no metadata section: version 4 EIFs must have one"],
    ),
    "custom metadata array": (
        Layout(
            sections=[
                *GOOD[:2],
                (5, META.replace(b'"CustomMetadata":null', b'"CustomMetadata":[1]')),
                *GOOD[3:],
            ]
        ),
        ["metadata CustomMetadata is neither an object nor null: nitro-cli describe-eif fails on it"],
    ),
}


@pytest.mark.parametrize("case", VERIFY_PROBLEMS, ids=list(VERIFY_PROBLEMS))
def test_verify_problems_exit_1(tmp_path: Path, capsys: Capture, case: str) -> None:
    layout, problems = VERIFY_PROBLEMS[case]
    path = _write(tmp_path, layout)
    assert cli.main(["verify", str(path)]) == 1
    assert capsys.readouterr().out.splitlines() == [f"{path}: {p}" for p in problems]
    assert cli.main(["describe", str(path)]) == 0  # still describable
    capsys.readouterr()


def test_version_3_without_metadata_is_fine(tmp_path: Path, capsys: Capture) -> None:
    path = _write(tmp_path, Layout(sections=[GOOD[0], GOOD[1], GOOD[3]], version=3))
    assert cli.main(["verify", str(path)]) == 0
    assert read_eif(path).metadata is None
    assert [s.type for s in read_eif(path).sections] == [
        SectionType.KERNEL,
        SectionType.CMDLINE,
        SectionType.RAMDISK,
    ]
    capsys.readouterr()
