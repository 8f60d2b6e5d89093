"""The metadata section: eif_build's field defaults and serde_json's exact bytes."""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import pytest
from conftest import VECTORS
from hypothesis import given
from hypothesis import strategies as st

from eifbuild.eif.buildtime import BuildTime
from eifbuild.eif.metadata import (
    EifMetadata,
    canonical,
    dumps,
    format_float,
    kernel_info_from_config,
    load_custom_metadata,
    loads,
    make_metadata,
)
from eifbuild.errors import EifFormatError, InputError


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (2.5, "2.5"),
        (-0.0, "-0.0"),
        (0.0, "0.0"),
        (1e-7, "1e-7"),
        (1e300, "1e300"),
        (100.0, "100.0"),
        (0.1, "0.1"),
        (1e15, "1000000000000000.0"),
        (1e16, "1e16"),
        (1.5e20, "1.5e20"),
        (-1.5e-20, "-1.5e-20"),
        (0.0001, "0.0001"),
        (0.00001, "0.00001"),
        (1e-6, "1e-6"),
        (123.456, "123.456"),
        (5e-324, "5e-324"),
        (1.7976931348623157e308, "1.7976931348623157e308"),
        (12345678901234567890.0, "1.2345678901234567e19"),
    ],
)
def test_floats_are_formatted_like_ryu(value: float, text: str) -> None:
    assert format_float(value) == text


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_float_format_round_trips(value: float) -> None:
    text = format_float(value)
    assert float(text) == value
    assert math.copysign(1, float(text)) == math.copysign(1, value)
    assert "+" not in text
    assert "e-0" not in text


def test_numbers_are_read_like_serde_json() -> None:
    value = loads(
        b"[-0, 0, 18446744073709551615, 18446744073709551616, -9223372036854775808, -9223372036854775809, 1.0]"
    )
    assert value == [-0.0, 0, 2**64 - 1, 2.0**64, -(2**63), -(2.0**63), 1.0]
    assert isinstance(value, list)
    assert [type(v) for v in value] == [float, int, int, float, int, float, float]
    assert (
        dumps(value)
        == "[-0.0,0,18446744073709551615,1.8446744073709552e19,-9223372036854775808,-9.223372036854776e18,1.0]"
    )
    for bad in (b"NaN", b"[Infinity]", b"-Infinity"):
        with pytest.raises(ValueError, match="is not valid JSON"):
            loads(bad)


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers(-(2**63), 2**64 - 1) | st.text(),
        lambda children: (
            st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
        ),
        max_leaves=20,
    )
)
def test_compact_and_pretty_json_match_python_for_non_floats(value: object) -> None:
    # Python's json module agrees with serde_json everywhere except floats (spec §4.1, §7).
    assert dumps(value) == json.dumps(value, separators=(",", ":"), ensure_ascii=False)  # type: ignore[arg-type]
    assert dumps(value, indent=2) == json.dumps(value, indent=2, ensure_ascii=False)  # type: ignore[arg-type]


def test_canonical_sorts_every_object() -> None:
    assert list(canonical({"b": 1, "a": {"d": [{"z": 1, "y": 2}], "c": 0}})) == ["a", "b"]  # type: ignore[arg-type]
    nested = canonical({"x": [{"z": 1, "y": 2}]})
    assert isinstance(nested, dict)
    assert json.dumps(nested) == '{"x": [{"y": 2, "z": 1}]}'


def test_reference_custom_metadata_bytes() -> None:
    # x86_2rd_fixed_metadata: the reference eif_build output for the vector's metadata.json
    custom = load_custom_metadata(VECTORS / "inputs" / "metadata.json")
    meta = EifMetadata("bzImage", "1.0", "2024-01-02T03:04:05+00:00", custom=custom)
    eif = (VECTORS / "x86_2rd_fixed_metadata" / "expected.eif").read_bytes()
    offset, size = struct.unpack_from(">Q", eif, 28 + 16)[0], struct.unpack_from(">Q", eif, 284 + 16)[0]
    assert meta.to_bytes() == eif[offset + 12 : offset + 12 + size]
    assert b'"b":[1,2.5,-0.0,1e-7,1e300,12345678901234567890,true,null]' in meta.to_bytes()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            b"[1]",
            "custom metadata is a JSON array: expected an object or null (nitro-cli describe-eif cannot show anything else)",
        ),
        (
            b"{",
            "custom metadata is not valid JSON: Expecting property name enclosed in double quotes: line 1 column 2 (char 1)",
        ),
        (b'{"a": NaN}', "custom metadata is not valid JSON: NaN is not valid JSON"),
        (
            b'{"a": "\\ud800"}',
            "custom metadata is not valid JSON: a string contains a lone UTF-16 surrogate escape",
        ),
        (b'{"a": "' + b"x" * 4100 + b'"}', "custom metadata is larger than 4096 bytes: refused"),
        (
            b"\xef\xbb\xbf{}",
            "custom metadata is not valid JSON: Unexpected UTF-8 BOM (decode using utf-8-sig): line 1 column 1 (char 0)",
        ),
    ],
    ids=["array", "syntax", "nan", "surrogate", "too-large", "bom"],
)
def test_custom_metadata_errors(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "m.json"
    path.write_bytes(content)
    with pytest.raises(InputError) as err:
        load_custom_metadata(path)
    assert str(err.value) == f"{path}: {message}"


def test_custom_metadata_null_and_duplicates(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    path.write_bytes(b"null")
    assert load_custom_metadata(path) is None
    path.write_bytes(b'{"k": 1, "k": 2}')  # serde_json and Python agree: the last one wins
    assert load_custom_metadata(path) == {"k": 2}


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("# Linux/x86_64 4.14.177-104.253.amzn2.x86_64 Kernel Configuration", ("Linux", "4.14.177")),
        ("# Linux/arm64 5.10.184-175.731.amzn2.aarch64 Kernel Configuration", ("Linux", "5.10.184")),
        ("# Linux/x86_64 6.1.0 Kernel Configuration", ("Linux", "6.1.0")),
        (" # Linux/x86_64 6.1.0", ("#", "x86_64")),  # a leading space shifts the tokens, as in eif_build
        ("#", ("Unknown", "Unknown")),
        ("# Linux", ("Linux", "Unknown")),
    ],
)
def test_kernel_config_header(line: str, expected: tuple[str, str]) -> None:
    assert (
        kernel_info_from_config(f"#\n# Automatically generated file; DO NOT EDIT.\n{line}\n#\n") == expected
    )


def test_kernel_config_needs_three_lines(tmp_path: Path) -> None:
    config = tmp_path / "k.config"
    config.write_text("#\n")
    with pytest.raises(InputError) as err:
        make_metadata(kernel=tmp_path / "bzImage", kernel_config=config)
    assert str(err.value) == (
        f"{config}: has fewer than 3 lines: expected the '# Linux/<arch> <version> Kernel Configuration' header"
    )


def test_make_metadata_defaults(tmp_path: Path) -> None:
    kernel = tmp_path / "Image"
    assert make_metadata(kernel=kernel, environ={}) == EifMetadata(
        "Image", "1.0", "1970-01-01T00:00:00+00:00"
    )
    assert make_metadata(kernel=kernel, name="n", environ={}).image_version == "n"
    assert make_metadata(kernel=kernel, name="n", version="", environ={}).image_version == ""
    assert (
        make_metadata(kernel=kernel, environ={"SOURCE_DATE_EPOCH": "86400"}).build_time
        == "1970-01-02T00:00:00+00:00"
    )
    assert (
        make_metadata(kernel=kernel, build_time=BuildTime.from_epoch(3600), environ={}).build_time
        == "1970-01-01T01:00:00+00:00"
    )
    assert make_metadata(kernel=kernel, operating_system="", environ={}).operating_system == ""
    assert make_metadata(kernel=kernel, custom={"b": 1, "a": 2}, environ={}).custom == {"a": 2, "b": 1}
    with pytest.raises(InputError, match=r"^custom metadata is a JSON string: expected an object or null"):
        make_metadata(kernel=kernel, custom="text", environ={})


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (b"null", "metadata section is a JSON null, expected an object"),
        (b'{"ImageName": 1}', "metadata lacks key 'BuildMetadata'"),
        (
            b'{"ImageName": 1, "BuildMetadata": {}}',
            "metadata key 'ImageName' is a JSON number, expected a string",
        ),
        (
            b'{"ImageName": "n", "ImageVersion": "v", "BuildMetadata": {}}',
            "metadata BuildMetadata lacks key 'BuildTime'",
        ),
    ],
)
def test_metadata_section_errors(raw: bytes, message: str) -> None:
    with pytest.raises(EifFormatError) as err:
        EifMetadata.from_bytes(raw)
    assert str(err.value) == message


def test_metadata_from_bytes_round_trip_and_extra_keys() -> None:
    meta = EifMetadata("n", "v", "t", docker_info={"b": 1, "a": [2]}, custom={"z": 1.5})
    assert EifMetadata.from_bytes(meta.to_bytes()) == meta
    extra = meta.to_bytes()[:-1] + b',"Extra":1}'
    assert EifMetadata.from_bytes(extra) == meta  # unknown keys are tolerated, like nitro-cli
