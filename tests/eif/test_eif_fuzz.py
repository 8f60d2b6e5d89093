"""Reader fuzzing: mutated reference EIFs may only ever raise EifFormatError, never anything else.

Mutations are aimed where parsers break (the header, section headers, metadata JSON, signature
CBOR and certificate) as well as anywhere in the file, and combine truncation, insertion,
deletion, byte flips and "interesting" integers written into header fields.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import cbor2
import pytest
from conftest import VECTORS
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from eifbuild.eif import describe, read_eif, verify
from eifbuild.eif._cose import signature_section
from eifbuild.eif.format import HEADER_SIZE, MAX_SECTIONS, SECTION_HEADER_SIZE, EifHeader
from eifbuild.errors import EifFormatError

NOW = datetime(2030, 1, 1, tzinfo=timezone.utc)
INTERESTING = (
    0,
    1,
    2,
    3,
    4,
    5,
    6,
    11,
    12,
    13,
    23,
    24,
    31,
    32,
    33,
    255,
    548,
    560,
    0xFFFF,
    2**31,
    2**63,
    2**64 - 1,
)


@dataclass(frozen=True)
class Seed:
    data: bytes
    flags: int
    sections: tuple[tuple[int, bytes], ...]  # (type, data) in file order
    regions: tuple[tuple[int, int], ...]  # (start, end) byte ranges worth aiming raw mutations at
    signature: tuple[bytes, bytes] | None  # (certificate PEM, COSE_Sign1) of a signed seed


def _seed(data: bytes) -> Seed:
    flags, count = struct.unpack_from(">H", data, 6)[0], struct.unpack_from(">H", data, 26)[0]
    offsets = struct.unpack_from(">32Q", data, 28)[:count]
    sizes = struct.unpack_from(">32Q", data, 284)[:count]
    regions = [(0, HEADER_SIZE), (0, len(data))]
    sections = []
    for offset, size in zip(offsets, sizes, strict=True):
        kind = struct.unpack_from(">H", data, offset)[0]
        start = offset + SECTION_HEADER_SIZE
        sections.append((kind, data[start : start + size]))
        regions.append((offset, start))
        if kind in PARSED:
            regions.append((start, start + size))
    signature = None
    for kind, payload in sections:
        if kind == 4:
            entry = cbor2.loads(payload)[0]
            signature = (bytes(entry["signing_certificate"]), bytes(entry["signature"]))
    return Seed(data, flags, tuple(sections), tuple(regions), signature)


PARSED = (2, 4, 5)  # cmdline, signature, metadata: the sections the reader decodes
SEEDS = [_seed(path.read_bytes()) for path in sorted(VECTORS.glob("*/expected.eif"))]
assert SEEDS, f"no expected.eif files under {VECTORS}"


def _assemble(sections: list[tuple[int, bytes]], flags: int, crc_ok: bool) -> bytes:
    """A structurally consistent EIF (table and section headers agree) around mutated payloads."""
    body = bytearray()
    offsets, sizes = [], []
    for kind, payload in sections[:MAX_SECTIONS]:
        offsets.append(HEADER_SIZE + len(body))
        sizes.append(len(payload))
        body += struct.pack(">HHQ", kind, 0, len(payload)) + payload
    prefix = EifHeader.build(flags=flags, offsets=offsets, sizes=sizes).crc_prefix()
    crc = zlib.crc32(prefix + body) if crc_ok else 0
    return prefix + crc.to_bytes(4, "big") + bytes(body)


def _edit(draw: st.DrawFn, data: bytearray) -> None:
    """One byte-level edit at a drawn position: flip, overwrite, interesting int, cut, insert, delete."""
    at = draw(st.integers(0, max(len(data) - 1, 0)))
    op = draw(st.sampled_from(["flip", "bytes", "int", "truncate", "insert", "delete"]))
    if op == "flip" and data:
        data[at] ^= 1 << draw(st.integers(0, 7))
    elif op == "bytes":
        data[at : at + 4] = draw(st.binary(min_size=1, max_size=4))
    elif op == "int":
        width = draw(st.sampled_from([1, 2, 4, 8]))
        data[at : at + width] = (draw(st.sampled_from(INTERESTING)) % (1 << (8 * width))).to_bytes(
            width, "big"
        )
    elif op == "truncate":
        del data[at:]
    elif op == "insert":
        data[at:at] = draw(st.binary(min_size=1, max_size=64))
    elif op == "delete":
        del data[at : at + draw(st.integers(1, 64))]


def _raw_mutant(draw: st.DrawFn, seed: Seed) -> bytes:
    data = bytearray(seed.data)
    for _ in range(draw(st.integers(1, 4))):
        start, end = draw(st.sampled_from(seed.regions))
        window = data[start:end]
        _edit(draw, window)
        data[start:end] = window
    return bytes(data)


def _section_mutant(draw: st.DrawFn, seed: Seed) -> bytes:
    sections = list(seed.sections)
    parsed = [i for i, (kind, _) in enumerate(sections) if kind in PARSED]
    for _ in range(draw(st.integers(1, 3))):
        index = draw(st.sampled_from(parsed + list(range(len(sections)))))
        kind, payload = sections[index]
        op = draw(st.sampled_from(["edit", "edit", "edit", "retype", "drop", "duplicate"]))
        if op == "edit" and kind == 4 and seed.signature and draw(st.booleans()):
            sections[index] = (kind, _edit_signature_part(draw, seed.signature))
        elif op == "edit":
            data = bytearray(payload)
            _edit(draw, data)
            sections[index] = (kind, bytes(data))
        elif op == "retype":
            sections[index] = (draw(st.integers(0, 7)), payload)
        elif op == "drop":
            del sections[index]
        else:
            sections.insert(draw(st.integers(0, len(sections))), (kind, payload))
        parsed = [i for i, (k, _) in enumerate(sections) if k in PARSED] or [0]
        if not sections:
            break
    return _assemble(sections, seed.flags, crc_ok=draw(st.booleans()))


def _edit_signature_part(draw: st.DrawFn, signature: tuple[bytes, bytes]) -> bytes:
    """Edit the seed's certificate PEM or COSE_Sign1 and wrap them in the intact outer CBOR layout."""
    parts = [bytearray(part) for part in signature]
    _edit(draw, parts[draw(st.integers(0, 1))])
    return signature_section(bytes(parts[0]), bytes(parts[1]))


@st.composite
def mutated_eifs(draw: st.DrawFn) -> bytes:
    seed = draw(st.sampled_from(SEEDS + [s for s in SEEDS if s.signature] * 3))
    return _section_mutant(draw, seed) if draw(st.booleans()) else _raw_mutant(draw, seed)


def _check(path: Path, data: bytes) -> None:
    path.write_bytes(data)
    message = ""
    try:
        image = read_eif(path)
        verify(image, now=NOW)
        describe(image)
    except EifFormatError as exc:  # the only exception allowed
        message = str(exc)
    assert "\n" not in message


@pytest.fixture(scope="module")
def fuzz_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("fuzz") / "mutant.eif"


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(data=mutated_eifs())
def test_mutants_quick(fuzz_file: Path, data: bytes) -> None:
    _check(fuzz_file, data)


@pytest.mark.slow
@settings(
    max_examples=10_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=mutated_eifs())
def test_mutants_ten_thousand(fuzz_file: Path, data: bytes) -> None:
    _check(fuzz_file, data)
