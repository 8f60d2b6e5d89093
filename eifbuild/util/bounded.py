"""Bounded reads of what comes from outside (issue #23): regular files only, sizes capped, JSON and
TOML nested at most :data:`MAX_DEPTH` deep with finite numbers only.

- :func:`open_regular` opens a file that must be a regular file without ever blocking on it (a FIFO
  or a device is refused with one line naming the path);
- :func:`read_regular` reads such a file whole, refusing more than a limit;
- :class:`Capped` wraps a stream that may not yield more than a limit (a declared size, else
  :data:`INPUT_CAP`);
- :func:`decode_json` is the one JSON decoder for documents from outside: depth checked before
  decoding, ``NaN``/``Infinity`` and numbers that overflow a float refused; it raises ValueError
  with a one-line reason, which each caller turns into its own error kind;
- :func:`check_toml_depth` is the same depth rule for TOML text.

The limits, and how to raise the one that is configurable, are listed in the README's
"Security" section.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import re
import stat
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any, Final

from ..errors import FileAccessError, InputError, UsageError

if TYPE_CHECKING:
    from collections.abc import Callable

    from .fsutil import Readable

# serde_json's recursion limit: eif_build and nitro-cli refuse deeper JSON, and no configuration,
# manifest or image document nests anywhere near it.
MAX_DEPTH: Final = 128
PATH_MAX: Final = 4096  # Linux: a symlink target or a path longer than this is not one
NAME_MAX: Final = 255  # Linux: the longest file name (one path component), in bytes

_KINDS: Final = {
    stat.S_IFDIR: "a directory",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a FIFO",
    stat.S_IFSOCK: "a socket",
}


@dataclass(frozen=True)
class Cap:
    """A size limit for bytes whose size nothing declares; ``env`` raises it (a number of bytes,
    or with a K, M, G or T suffix)."""

    env: str
    default: int

    def value(self, environ: dict[str, str] | None = None) -> int:
        text = (environ if environ is not None else os.environ).get(self.env, "").strip()
        if not text:
            return self.default
        match = re.fullmatch(r"([0-9]+)\s*([KMGT]?)i?B?", text, re.IGNORECASE)
        if match is None:
            msg = f"expected a size in bytes (e.g. 8G), got {text!r}"
            raise UsageError(msg, key=self.env)
        return int(match[1]) << (10 * " KMGT".index(match[2].upper() or " "))


# downloads (file:// and HTTP without Content-Length), OCI blobs without a size: 16 GiB by default
INPUT_CAP: Final = Cap("EIFBUILD_MAX_INPUT_SIZE", 16 << 30)


# A silent remote cache or registry: each call waits at most this long for a byte (seconds), and is
# tried twice, so an endpoint that accepts and never answers costs about 15 s before the warning.
TIMEOUT_ENV: Final = "EIFBUILD_NETWORK_TIMEOUT"
CONNECT_TIMEOUT: Final = 5.0
READ_TIMEOUT: Final = 7.0


def network_timeouts(environ: dict[str, str] | None = None) -> tuple[float, float]:
    """(connect, read) timeouts in seconds for the remote cache and registries; ``TIMEOUT_ENV``
    sets the read timeout (and a connect timeout no longer than it)."""
    text = (environ if environ is not None else os.environ).get(TIMEOUT_ENV, "").strip()
    if not text:
        return CONNECT_TIMEOUT, READ_TIMEOUT
    try:
        read = float(text)
    except ValueError:
        read = -1.0
    if not 0 < read < 86400:
        msg = f"expected a number of seconds, got {text!r}"
        raise UsageError(msg, key=TIMEOUT_ENV)
    return min(CONNECT_TIMEOUT, read), read


def file_kind(mode: int) -> str:
    return _KINDS.get(stat.S_IFMT(mode), "not a regular file")


def open_regular(path: str | os.PathLike[str], *, what: str = "file") -> IO[bytes]:
    """``path`` opened for reading; anything but a regular file (a FIFO, a device, a directory) is a
    :class:`FileAccessError` naming it, found without blocking and without reading a byte."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        msg = f"cannot read {what}: {exc.strerror or exc}"
        raise FileAccessError(msg, path=os.fspath(path)) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            msg = f"{what} is {file_kind(st.st_mode)}, expected a regular file: refused"
            raise FileAccessError(msg, path=os.fspath(path))
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) & ~os.O_NONBLOCK)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_regular(path: str | os.PathLike[str], *, limit: int, what: str = "file") -> bytes:
    """The bytes of the regular file ``path``; more than ``limit`` of them is an :class:`InputError`
    (read until one byte past the limit: the size ``stat`` reports is not trusted)."""
    with open_regular(path, what=what) as fh:
        try:
            data = fh.read(limit + 1)
        except OSError as exc:
            msg = f"cannot read {what}: {exc.strerror or exc}"
            raise FileAccessError(msg, path=os.fspath(path)) from None
    if len(data) > limit:
        msg = f"{what} is larger than {limit} bytes: refused"
        raise InputError(msg, path=os.fspath(path))
    return data


class Capped:
    """A stream that raises ``error(limit)`` once more than ``limit`` bytes were read from it."""

    def __init__(self, stream: Readable, limit: int, error: Callable[[int], Exception]) -> None:
        self._stream = stream
        self.limit = limit
        self.size = 0
        self._error = error

    def read(self, size: int = -1, /) -> bytes:
        if size < 0:
            return b"".join(iter(lambda: self.read(1 << 20), b""))
        data = self._stream.read(max(min(size, self.limit + 1 - self.size), 1))
        self.size += len(data)
        if self.size > self.limit:
            raise self._error(self.limit)
        return data


# -- structure --------------------------------------------------------------------------------------
_JSON_TOKENS: Final = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)
_TOML_TOKENS: Final = re.compile(
    r'"""[\s\S]*?"""|\'\'\'[\s\S]*?\'\'\'|"[^"\\\n]*(?:\\.[^"\\\n]*)*"|\'[^\'\n]*\'|#[^\n]*|[\[\]{}]'
)


def _check_depth(text: str, tokens: re.Pattern[str], max_depth: int) -> None:
    depth = 0
    for match in tokens.finditer(text):
        token = match.group()
        if token in ("[", "{"):
            depth += 1
            if depth > max_depth:
                msg = f"nested deeper than {max_depth} levels"
                raise ValueError(msg)
        elif token in ("]", "}"):
            depth -= 1


def check_toml_depth(text: str, max_depth: int = MAX_DEPTH) -> None:
    """ValueError when arrays and inline tables in TOML ``text`` nest deeper than ``max_depth``."""
    _check_depth(text, _TOML_TOKENS, max_depth)


def _no_constant(name: str) -> Any:
    msg = f"{name} is not valid JSON"
    raise ValueError(msg)


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        msg = f"the number {text[:40]} is too large for a float"
        raise ValueError(msg)
    return value


def decode_json(
    data: bytes | str, *, max_depth: int = MAX_DEPTH, parse_int: Callable[[str], Any] | None = None
) -> Any:
    """The JSON document in ``data`` (UTF-8 bytes or text); ValueError (one line) when it is not
    valid JSON, nests deeper than ``max_depth`` or holds a non-finite number."""
    text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
    _check_depth(text, _JSON_TOKENS, max_depth)
    try:
        return json.loads(text, parse_constant=_no_constant, parse_float=_finite_float, parse_int=parse_int)
    except RecursionError:  # pragma: no cover - the depth check comes first
        msg = f"nested deeper than {max_depth} levels"
        raise ValueError(msg) from None


def json_error(exc: BaseException) -> str:
    """The one line to say why :func:`decode_json` refused a document."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def safe_name(value: str, *, max_bytes: int = 128) -> str | None:
    """Why ``value`` is not one safe file name component of at most ``max_bytes`` bytes, or None."""
    if value in {"", ".", ".."}:
        return "expected a file name, not '.' or '..'"
    if "/" in value or "\\" in value:
        return "expected one file name component: no '/' or '\\'"
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in value):
        return "expected a name without control characters"
    with contextlib.suppress(UnicodeEncodeError):
        if len(value.encode("utf-8")) <= max_bytes:
            return None
        return f"expected at most {max_bytes} bytes, got {len(value.encode('utf-8'))}"
    return "expected UTF-8 text"
