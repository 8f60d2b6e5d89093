"""Running eifbuild on hostile inputs (issue #23): each case in a child process under resource limits
(address space, file size, a timeout), asserting success or exactly one ``error:`` line and no
traceback; builders for the hostile files, made at test time (no committed blobs)."""

from __future__ import annotations

import gzip
import os
import resource
import struct
import subprocess
import sys
import textwrap
import zlib
from dataclasses import dataclass
from pathlib import Path

from conftest import VECTORS

from eifbuild.eif.format import HEADER_SIZE, SECTION_HEADER_SIZE, EifHeader

MEMORY: int = 1 << 30  # RLIMIT_AS of each case: the 128 MiB symlink targets must not be held whole
FILE_SIZE: int = 256 << 20  # RLIMIT_FSIZE: no case may write more than this into one file
TIMEOUT: float = 60.0  # seconds per case: a FIFO must never make a command hang


@dataclass(frozen=True)
class Outcome:
    code: int
    out: str
    err: str

    def errors(self) -> list[str]:
        return [line for line in self.err.splitlines() if line.startswith("error:")]


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY, MEMORY))
    resource.setrlimit(resource.RLIMIT_FSIZE, (FILE_SIZE, FILE_SIZE))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def child(code: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = TIMEOUT) -> Outcome:
    """Run Python ``code`` in a limited child (cwd ``cwd``; HOME and the caches inside it)."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("EIFBUILD_", "AWS_"))}
    full.update(
        HOME=str(cwd / ".home"),
        EIFBUILD_CACHE=str(cwd / ".store"),
        EIFBUILD_SOURCES_DIR=str(cwd / ".sources"),
        XDG_CACHE_HOME=str(cwd / ".cache"),
        EIFBUILD_REMOTE_CACHE="",
        PYTHONPATH=str(Path(__file__).resolve().parent),  # the fuzz targets and these helpers
        **(env or {}),
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=cwd,
            env=full,
            capture_output=True,
            text=True,
            errors="replace",
            timeout=timeout,
            preexec_fn=_limits,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise AssertionError(f"timed out after {timeout} s: {code}") from None
    return Outcome(done.returncode, done.stdout, done.stderr)


def cli(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = TIMEOUT) -> Outcome:
    """``eifbuild ARGS`` in a limited child."""
    return child(f"import sys; from eifbuild.cli import main; sys.exit(main({args!r}))", cwd, env, timeout)


def plan(config: Path, env: dict[str, str] | None = None) -> Outcome:
    """What ``doit eif`` does first (eif.toml, recipes, the plan), with the CLI's error boundary."""
    code = f"""
        import sys
        from eifbuild.errors import EifbuildError
        from eifbuild.plan import Plan, load_project
        try:
            Plan(load_project({str(config)!r}))
        except EifbuildError as exc:
            print(f"error: {{exc}}", file=sys.stderr)
            sys.exit(2)
        """
    return child(code, config.parent, env)


def assert_refused(result: Outcome, *needles: str, codes: tuple[int, ...] = (2,)) -> str:
    """Exactly one ``error:`` line (naming each needle), no traceback, an exit code in ``codes``."""
    assert "Traceback" not in result.err, result.err[-3000:]
    assert result.code in codes, (result.code, result.err[-3000:])
    lines = result.errors()
    assert len(lines) == 1, result.err[-3000:]
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


def assert_clean(result: Outcome, codes: tuple[int, ...] = (0, 2)) -> None:
    """Success, or one ``error:`` line; never a traceback (what a fuzz case may end in)."""
    assert "Traceback" not in result.err, result.err[-3000:]
    assert result.code in codes, (result.code, result.err[-3000:])
    if result.code != 0:
        assert len(result.errors()) == 1, result.err[-3000:]


def tree_files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")} if root.exists() else set()


# -- builders ----------------------------------------------------------------------------------------
def newc(members: list[tuple[str, int, bytes]]) -> bytes:
    """A newc archive of (name, mode, data) members, with the trailer."""
    out = bytearray()
    for ino, (name, mode, data) in enumerate([*members, ("TRAILER!!!", 0, b"")], start=1):
        raw = name.encode() + b"\0"
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(raw), 0]
        out += b"070701" + b"".join(b"%08X" % f for f in fields) + raw
        out += b"\0" * (-len(out) % 4) + data
        out += b"\0" * (-len(out) % 4)
    return bytes(out)


def seed_sections() -> tuple[int, list[tuple[int, bytes]]]:
    """(flags, [(type, payload)]) of an unsigned reference EIF with a metadata section."""
    data = (VECTORS / "x86_2rd_fixed_metadata" / "expected.eif").read_bytes()
    flags, count = struct.unpack_from(">H", data, 6)[0], struct.unpack_from(">H", data, 26)[0]
    offsets = struct.unpack_from(">32Q", data, 28)[:count]
    sizes = struct.unpack_from(">32Q", data, 284)[:count]
    sections = []
    for offset, size in zip(offsets, sizes, strict=True):
        kind = struct.unpack_from(">H", data, offset)[0]
        start = offset + SECTION_HEADER_SIZE
        sections.append((kind, data[start : start + size]))
    return flags, sections


def assemble(flags: int, sections: list[tuple[int, bytes]]) -> bytes:
    body = bytearray()
    offsets, sizes = [], []
    for kind, payload in sections:
        offsets.append(HEADER_SIZE + len(body))
        sizes.append(len(payload))
        body += struct.pack(">HHQ", kind, 0, len(payload)) + payload
    prefix = EifHeader.build(flags=flags, offsets=offsets, sizes=sizes).crc_prefix()
    return prefix + zlib.crc32(prefix + body).to_bytes(4, "big") + bytes(body)


def eif_with(*, metadata: bytes | None = None, ramdisk: bytes | None = None) -> bytes:
    """The reference EIF with its metadata section or its last ramdisk replaced."""
    flags, sections = seed_sections()
    last_ramdisk = max(i for i, (kind, _) in enumerate(sections) if kind == 3)
    out = []
    for i, (kind, payload) in enumerate(sections):
        replaced = metadata if kind == 5 and metadata is not None else payload
        out.append((kind, ramdisk if i == last_ramdisk and ramdisk is not None else replaced))
    return assemble(flags, out)


def metadata_with_custom(custom: bytes) -> bytes:
    _, sections = seed_sections()
    meta = next(payload for kind, payload in sections if kind == 5)
    at = meta.index(b'"CustomMetadata":') + len(b'"CustomMetadata":')
    return meta[:at] + custom + b"}"


def big_symlinks_ramdisk(target_size: int = 128 << 20, count: int = 2) -> bytes:
    """A gzip newc ramdisk with ``count`` symlinks whose targets are ``target_size`` bytes."""
    target = b"a" * target_size
    cpio = newc([(f"link{i}", 0o120777, target) for i in range(count)])
    return gzip.compress(cpio, compresslevel=1, mtime=0)
