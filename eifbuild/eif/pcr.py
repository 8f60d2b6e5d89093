"""PCR arithmetic: the streaming PCR0/1/2 hashers, PCR8, and the CRC-32 combine the writer needs.

PCRn = H(zeros ‖ H(content)): the extend of an all-zero register (spec §5.1). PCR0 covers kernel,
cmdline and every ramdisk; PCR1 kernel, cmdline and the first ramdisk; PCR2 the later ramdisks.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal, Protocol

from ..errors import UsageError
from ..util.background import Background

if TYPE_CHECKING:
    from collections.abc import Callable

HashAlgo = Literal["sha256", "sha384", "sha512"]


class Hasher(Protocol):
    """What :meth:`PcrHashers.feed` updates beside PCR2: a hashlib object."""

    def update(self, data: bytes, /) -> None: ...


PcrRole = Literal["boot", "app"]  # boot: PCR0 and PCR1; app: PCR0 and PCR2
HASH_ALGOS: Final[tuple[HashAlgo, ...]] = ("sha256", "sha384", "sha512")
DEFAULT_ALGO: Final[HashAlgo] = "sha384"

# What eif_build 0.3.1 and nitro-cli <= 1.4 print as "HashAlgorithm": Rust's Debug of sha2 0.9's
# hasher. Consumers should not parse it.
HASH_ALGORITHM_LABELS: Final[dict[HashAlgo, str]] = {
    "sha256": "Sha256 { ... }",
    "sha384": "Sha384 { ... }",
    "sha512": "Sha512 { ... }",
}


def parse_algo(value: str) -> HashAlgo:
    for algo in HASH_ALGOS:
        if value == algo:
            return algo
    msg = f"unknown hash algorithm {value!r}: expected one of {', '.join(HASH_ALGOS)}"
    raise UsageError(msg, key="algo")


def algo_for_digest_size(size: int) -> HashAlgo | None:
    """The algorithm whose digests are ``size`` bytes long (PCR hex strings have twice that)."""
    for algo in HASH_ALGOS:
        if hashlib.new(algo).digest_size == size:
            return algo
    return None


def extend(digest: bytes, algo: HashAlgo) -> bytes:
    """Extend an all-zero PCR with ``digest``."""
    return hashlib.new(algo, bytes(len(digest)) + digest).digest()


def measure_bytes(data: bytes, algo: HashAlgo = DEFAULT_ALGO) -> str:
    """The PCR (hex) that results from extending a zero register with H(data); PCR8 uses the cert DER."""
    return extend(hashlib.new(algo, data).digest(), algo).hex()


@dataclass(frozen=True)
class Measurements:
    """PCR values as lower-case hex, in one hash algorithm."""

    algo: HashAlgo
    pcr0: str
    pcr1: str
    pcr2: str
    pcr8: str | None = None

    def pcrs(self) -> dict[str, str]:
        """``{"PCR0": …, "PCR1": …, "PCR2": …[, "PCR8": …]}``."""
        values = {"PCR0": self.pcr0, "PCR1": self.pcr1, "PCR2": self.pcr2}
        if self.pcr8 is not None:
            values["PCR8"] = self.pcr8
        return values

    def to_json(self) -> dict[str, str]:
        """The map eif_build prints (and nitro-cli nests under "Measurements"), keys in its order."""
        return {"HashAlgorithm": HASH_ALGORITHM_LABELS[self.algo], **self.pcrs()}


class _Pcr01:
    """PCR0 and PCR1 state, fed in file order. PCR1's input is a prefix of PCR0's, so PCR1 forks from
    PCR0's state when the first app byte arrives (boot bytes after app bytes: only in hand-made files).
    """

    def __init__(self, algo: HashAlgo) -> None:
        self.pcr0 = hashlib.new(algo)
        self.pcr1: hashlib._Hash | None = None

    def boot(self, chunk: bytes) -> None:
        self.pcr0.update(chunk)
        if self.pcr1 is not None:
            self.pcr1.update(chunk)

    def app(self, chunk: bytes) -> None:
        if self.pcr1 is None:
            self.pcr1 = self.pcr0.copy()
        self.pcr0.update(chunk)


class PcrHashers:
    """Feeds kernel/cmdline/ramdisk bytes to the PCR0, PCR1 and PCR2 hashes in one pass.

    Call :meth:`feed` with every chunk of the file in order: role ``"boot"`` for the kernel, the
    cmdline and the first ramdisk, ``"app"`` for every later ramdisk, ``None`` for bytes that are
    not measured (section headers, metadata, the signature); then :meth:`finish`. Boot bytes are
    hashed once (PCR1 forks from PCR0), app bytes twice (PCR0 and PCR2). ``side`` (e.g. a running
    CRC) is called with every chunk, measured or not.

    With ``threaded`` the PCR2 hashing and ``side`` run on a worker thread while PCR0/PCR1 run on
    the caller's, which also reads and writes: hashlib and zlib release the GIL for a chunk, so the
    two halves use two CPUs, and the split balances a pack (caller: read, PCR0, write; worker: PCR2,
    CRC). Call :meth:`finish` or :meth:`close` (or use ``with``) to stop the worker; a failure in
    it is raised in the caller's thread. Chunks handed over must not be mutated afterwards (``bytes``).
    """

    def __init__(
        self,
        algo: HashAlgo = DEFAULT_ALGO,
        *,
        threaded: bool = False,
        side: Callable[[bytes], object] | None = None,
    ) -> None:
        self.algo = algo
        self._pcr01 = _Pcr01(algo)
        self._pcr2 = hashlib.new(algo)
        self._side = side
        self._worker: Background[tuple[bytes, bool, Hasher | None]] | None = (
            Background(self._behind, name="pcr2") if threaded else None
        )

    def _behind(self, item: tuple[bytes, bool, Hasher | None]) -> None:
        chunk, app, extra = item
        if self._side is not None:
            self._side(chunk)
        if app:
            self._pcr2.update(chunk)
        if extra is not None:
            extra.update(chunk)

    def feed(self, chunk: bytes, role: PcrRole | None, extra: Hasher | None = None) -> None:
        """Account for the next ``chunk`` of the file, measured as ``role`` says; ``extra`` (e.g. a
        section's own sha256) is updated with it beside PCR2, on the worker when threaded: read it
        after :meth:`finish`."""
        if self._worker is not None:
            self._worker.submit((chunk, role == "app", extra))  # first: the worker starts while we hash
        else:
            self._behind((chunk, role == "app", extra))
        if role == "boot":
            self._pcr01.boot(chunk)
        elif role == "app":
            self._pcr01.app(chunk)

    def feeder(self, role: PcrRole | None, extra: Hasher | None = None) -> Callable[[bytes], None]:
        """:meth:`feed` for the chunks of a section of that role."""
        return functools.partial(self.feed, role=role, extra=extra)

    def close(self) -> None:
        """Stop the worker thread (if any), e.g. after a failure; idempotent, never raises."""
        self._stop(reraise=False)

    def _stop(self, *, reraise: bool) -> None:
        if self._worker is not None:
            worker, self._worker = self._worker, None
            worker.close(reraise=reraise)

    def __enter__(self) -> PcrHashers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def finish(self) -> Measurements:
        """Wait for the worker (raising its failure, if any) and return the PCRs."""
        self._stop(reraise=True)
        pcr0 = self._pcr01.pcr0
        pcr1 = self._pcr01.pcr1 if self._pcr01.pcr1 is not None else pcr0
        return Measurements(
            self.algo,
            extend(pcr0.digest(), self.algo).hex(),
            extend(pcr1.digest(), self.algo).hex(),
            extend(self._pcr2.digest(), self.algo).hex(),
        )


def parallel_hashing() -> bool:
    """Whether a second hashing thread can help: more than one CPU is ours to use."""
    try:
        return len(os.sched_getaffinity(0)) > 1
    except AttributeError:  # not on Linux
        return (os.cpu_count() or 1) > 1


# ---------------------------------------------------------------------------------------------
# CRC-32 combine (zlib's crc32_combine, which Python's zlib does not expose): the writer CRCs the
# sections while streaming them and only knows the header bytes, which come first, at the end.

_CRC_POLY: Final = 0xEDB88320


def _multmodp(a: int, b: int) -> int:
    """a * b modulo the CRC polynomial (bit-reflected)."""
    m = 1 << 31
    p = 0
    while True:
        if a & m:
            p ^= b
            if (a & (m - 1)) == 0:
                return p
        m >>= 1
        b = (b >> 1) ^ _CRC_POLY if b & 1 else b >> 1


def _x2n_table() -> tuple[int, ...]:
    p = 1 << 30  # x^1
    table = [p]
    for _ in range(31):
        p = _multmodp(p, p)
        table.append(p)
    return tuple(table)


_X2N: Final = _x2n_table()  # x^(2^k) mod P


def _x8nmodp(n: int) -> int:
    """x^(8n) mod P."""
    p = 1 << 31  # x^0
    k = 3
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return p


def crc32_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32 of A ‖ B from crc32(A), crc32(B) and len(B)."""
    return _multmodp(_x8nmodp(len2), crc1) ^ crc2
