"""The EIF metadata section (type 5): its fields, and JSON bytes exactly as eif_build writes them.

eif_build serialises with serde_json: compact separators, the five top-level keys in a fixed order,
every object inside ``DockerInfo``/``CustomMetadata`` with sorted keys (serde's BTreeMap), strings
escaped only where JSON requires it, and floats in ryu's shortest form (``1e-7``, ``1e300``,
``2.5``, ``100.0``), which differs from Python's ``repr``. Numbers are read the way serde_json reads
them: integers outside u64/i64 and ``-0`` become floats. This module reproduces all of that.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Final, TypeAlias

from ..errors import EifFormatError, FileAccessError, InputError, UsageError, first_line
from ..util.bounded import decode_json, read_regular
from .buildtime import BuildTime

if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

JsonValue: TypeAlias = bool | int | float | str | list["JsonValue"] | dict[str, "JsonValue"] | None

EIF_BUILD_TOOL: Final = "eif_build"
EIF_BUILD_TOOL_VERSION: Final = "0.3.1"  # the eif_build release the reference vectors come from
DEFAULT_OS: Final = "OS"
DEFAULT_KERNEL_VERSION: Final = "kernel"
DEFAULT_IMAGE_VERSION: Final = "1.0"
CUSTOM_METADATA_MAX_SIZE: Final = 4096  # eif_build checks the file size before parsing

_U64_LIMIT: Final = 1 << 64
_I64_MIN: Final = -(1 << 63)


# ---------------------------------------------------------------------------------------------
# JSON with serde_json's number semantics and output format


def _parse_int(text: str) -> int | float:
    value = int(text)
    # serde_json: "-0" and integers outside u64/i64 are parsed as f64 (and one beyond f64 refused).
    if (value < _I64_MIN or value == 0) if text.startswith("-") else value >= _U64_LIMIT:
        as_float = float(text)
        if not math.isfinite(as_float):
            msg = f"the number {text[:40]} is too large for a float"
            raise ValueError(msg)
        return as_float
    return value


def loads(data: bytes) -> JsonValue:
    """Parse UTF-8 JSON as serde_json does (nested at most 128 deep, its limit; finite numbers only);
    raises ValueError when invalid."""
    value: JsonValue = decode_json(data, parse_int=_parse_int)  # strict UTF-8: serde_json's too
    return value


def canonical(value: JsonValue) -> JsonValue:
    """A copy with every object's keys sorted (serde_json's BTreeMap order), recursively."""
    if isinstance(value, dict):
        return {key: canonical(value[key]) for key in sorted(value)}
    if isinstance(value, list):
        return [canonical(item) for item in value]
    return value


def format_float(value: float) -> str:
    """``value`` as ryu (serde_json) prints it: shortest round-trip digits, Rust's exponent style."""
    if value == 0:
        return "-0.0" if math.copysign(1.0, value) < 0 else "0.0"
    sign = "-" if value < 0 else ""
    # repr() gives the same shortest round-trip digits as ryu; only the layout differs.
    _, digit_tuple, exponent = Decimal(repr(abs(value))).normalize().as_tuple()
    if not isinstance(exponent, int):
        msg = f"{value!r} is not a finite number"
        raise ValueError(msg)
    digits = "".join(map(str, digit_tuple))
    length = len(digits)
    point = length + exponent  # 10**(point-1) <= value < 10**point
    if exponent >= 0 and point <= 16:
        return f"{sign}{digits}{'0' * exponent}.0"
    if 0 < point <= 16:
        return f"{sign}{digits[:point]}.{digits[point:]}"
    if -5 < point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    mantissa = digits if length == 1 else f"{digits[0]}.{digits[1:]}"
    return f"{sign}{mantissa}e{point - 1}"


def dumps(value: JsonValue, *, indent: int | None = None) -> str:
    """serde_json's ``to_string`` (indent None) or ``to_string_pretty`` (indent 2); keys as given."""
    return _dump(value, indent, 0)


def _dump(value: JsonValue, indent: int | None, level: int) -> str:
    if value is None or isinstance(value, (bool, str)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, dict):
        items = [
            f"{json.dumps(k, ensure_ascii=False)}{_colon(indent)}{_dump(v, indent, level + 1)}"
            for k, v in value.items()
        ]
        return _wrap("{", items, "}", indent, level)
    return _wrap("[", [_dump(item, indent, level + 1) for item in value], "]", indent, level)


def _colon(indent: int | None) -> str:
    return ":" if indent is None else ": "


def _wrap(open_: str, items: list[str], close: str, indent: int | None, level: int) -> str:
    if not items:
        return open_ + close
    if indent is None:
        return open_ + ",".join(items) + close
    inner = "\n" + " " * (indent * (level + 1))
    return open_ + inner + ("," + inner).join(items) + "\n" + " " * (indent * level) + close


def encode(value: JsonValue) -> bytes:
    """Compact UTF-8 bytes; a string with a lone surrogate (serde_json rejects those) is a ValueError."""
    try:
        return dumps(value).encode("utf-8")
    except UnicodeEncodeError:
        msg = "a string contains a lone UTF-16 surrogate escape"
        raise ValueError(msg) from None


# ---------------------------------------------------------------------------------------------
# The metadata record


@dataclass(frozen=True)
class EifMetadata:
    """The metadata section's content (the JSON object ``EifIdentityInfo`` of the AWS crate)."""

    image_name: str
    image_version: str
    build_time: str
    build_tool: str = EIF_BUILD_TOOL
    build_tool_version: str = EIF_BUILD_TOOL_VERSION
    operating_system: str = DEFAULT_OS
    kernel_version: str = DEFAULT_KERNEL_VERSION
    docker_info: JsonValue = None
    custom: JsonValue = None

    def build_metadata(self) -> dict[str, JsonValue]:
        return {
            "BuildTime": self.build_time,
            "BuildTool": self.build_tool,
            "BuildToolVersion": self.build_tool_version,
            "OperatingSystem": self.operating_system,
            "KernelVersion": self.kernel_version,
        }

    def to_json(self) -> dict[str, JsonValue]:
        return {
            "ImageName": self.image_name,
            "ImageVersion": self.image_version,
            "BuildMetadata": self.build_metadata(),
            "DockerInfo": canonical(self.docker_info),
            "CustomMetadata": canonical(self.custom),
        }

    def to_bytes(self) -> bytes:
        """The section data, byte-identical to eif_build's."""
        try:
            return encode(self.to_json())
        except ValueError as exc:
            msg = f"metadata cannot be serialised: {exc}"
            raise UsageError(msg) from None

    @classmethod
    def from_bytes(cls, data: bytes) -> EifMetadata:
        """Parse a metadata section; anything nitro-cli could not deserialise is an EifFormatError."""
        try:
            obj = loads(data)
        except (ValueError, RecursionError) as exc:
            msg = f"metadata section is not valid UTF-8 JSON: {first_line(exc)}"
            raise EifFormatError(msg) from None
        if not isinstance(obj, dict):
            msg = f"metadata section is a JSON {_json_type(obj)}, expected an object"
            raise EifFormatError(msg)
        build = _require(obj, "BuildMetadata", "metadata")
        if not isinstance(build, dict):
            msg = f"metadata key 'BuildMetadata' is a JSON {_json_type(build)}, expected an object"
            raise EifFormatError(msg)
        where = "metadata BuildMetadata"
        return cls(
            image_name=_require_str(obj, "ImageName", "metadata"),
            image_version=_require_str(obj, "ImageVersion", "metadata"),
            build_time=_require_str(build, "BuildTime", where),
            build_tool=_require_str(build, "BuildTool", where),
            build_tool_version=_require_str(build, "BuildToolVersion", where),
            operating_system=_require_str(build, "OperatingSystem", where),
            kernel_version=_require_str(build, "KernelVersion", where),
            docker_info=canonical(_require(obj, "DockerInfo", "metadata")),
            custom=canonical(_require(obj, "CustomMetadata", "metadata")),
        )


def _require(obj: Mapping[str, JsonValue], key: str, where: str) -> JsonValue:
    if key not in obj:
        msg = f"{where} lacks key {key!r}"
        raise EifFormatError(msg)
    return obj[key]


def _require_str(obj: Mapping[str, JsonValue], key: str, where: str) -> str:
    value = _require(obj, key, where)
    if not isinstance(value, str):
        msg = f"{where} key {key!r} is a JSON {_json_type(value)}, expected a string"
        raise EifFormatError(msg)
    return value


def _json_type(value: JsonValue) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


# ---------------------------------------------------------------------------------------------
# Building metadata the way `eifbuild pack` (and eif_build) does


def kernel_info_from_config(text: str) -> tuple[str, str]:
    """(OperatingSystem, KernelVersion) from a kernel .config, exactly as eif_build derives them.

    eif_build reads the third line (``# Linux/x86_64 4.14.177-104... Kernel Configuration``), splits
    it on every space, ``/`` and ``-`` (keeping empty tokens) and takes tokens 1 and 3.
    """
    lines = [line.removesuffix("\r") for line in text.split("\n")]
    if len(lines) < 3:
        msg = "has fewer than 3 lines: expected the '# Linux/<arch> <version> Kernel Configuration' header"
        raise InputError(msg)
    tokens = re.split(r"[ /\-]", lines[2])
    os_name = tokens[1] if len(tokens) > 1 else "Unknown"
    version = tokens[3] if len(tokens) > 3 else "Unknown"
    return os_name, version


def read_kernel_config_text(path: Path) -> str:
    """The text of the kernel ``.config`` at ``path`` (bytes that are not UTF-8 replaced): what
    ``pack --kernel-config`` and ``kernel lint`` read."""
    try:
        return path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        msg = f"cannot read kernel config: {exc.strerror or exc}"
        raise FileAccessError(msg, path=path) from None


def read_kernel_config(path: Path) -> tuple[str, str]:
    """(OperatingSystem, KernelVersion) from the kernel config file at ``path``."""
    text = read_kernel_config_text(path)
    try:
        return kernel_info_from_config(text)
    except InputError as exc:
        raise InputError(exc.message, path=path) from None


def load_custom_metadata(path: Path) -> JsonValue:
    """The ``--metadata`` file: at most 4096 bytes of JSON holding an object (or null)."""
    data = read_regular(path, limit=CUSTOM_METADATA_MAX_SIZE, what="custom metadata")
    try:
        value = loads(data)
        encode(value)
    except (ValueError, RecursionError) as exc:
        msg = f"custom metadata is not valid JSON: {first_line(exc)}"
        raise InputError(msg, path=path) from None
    _check_custom(value, path)
    return canonical(value)


def _check_custom(value: JsonValue, path: Path | None = None) -> None:
    if value is not None and not isinstance(value, dict):
        msg = (
            f"custom metadata is a JSON {_json_type(value)}: expected an object or null "
            "(nitro-cli describe-eif cannot show anything else)"
        )
        raise InputError(msg, path=path)


def make_metadata(
    *,
    kernel: Path,
    name: str | None = None,
    version: str | None = None,
    build_time: BuildTime | None = None,
    build_tool: str = EIF_BUILD_TOOL,
    build_tool_version: str = EIF_BUILD_TOOL_VERSION,
    operating_system: str | None = None,
    kernel_version: str | None = None,
    kernel_config: Path | None = None,
    custom: JsonValue = None,
    environ: dict[str, str] | None = None,
) -> EifMetadata:
    """Metadata with eif_build's defaults, minus its irreproducible and surprising parts.

    * ImageName: ``name``, else the kernel file's name. ImageVersion: ``version``, else ``name``
      (eif_build's behaviour, which ignores ``--version``), else "1.0".
    * BuildTime: ``build_time`` (from :func:`~.buildtime.parse_build_time`: a string is kept
      verbatim), else SOURCE_DATE_EPOCH, else 1970-01-01T00:00:00+00:00. Never the current time.
    * OperatingSystem/KernelVersion: explicit values win, else the kernel config's header, else
      eif_build's "OS"/"kernel".
    * CustomMetadata: a JSON object (keys get sorted) or None; anything else is an :class:`InputError`.
    """
    _check_custom(custom)
    time_text = (build_time or BuildTime.pinned(environ)).text
    config_os, config_version = read_kernel_config(kernel_config) if kernel_config else (None, None)
    return EifMetadata(
        image_name=name if name is not None else kernel.name,
        image_version=version if version is not None else _first(name, DEFAULT_IMAGE_VERSION),
        build_time=time_text,
        build_tool=build_tool,
        build_tool_version=build_tool_version,
        operating_system=_first(operating_system, config_os, DEFAULT_OS),
        kernel_version=_first(kernel_version, config_version, DEFAULT_KERNEL_VERSION),
        custom=canonical(custom),
    )


def _first(*values: str | None) -> str:
    return next(value for value in values if value is not None)
