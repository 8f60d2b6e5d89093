"""The few CBOR encodings eifbuild writes by hand, byte for byte as serde_cbor/ciborium write them
(definite lengths, the shortest head), and COSE's Sig_structure, the bytes a COSE_Sign1 signs."""

from __future__ import annotations

from typing import Final

UINT: Final = 0
BYTES: Final = 2
TEXT: Final = 3
ARRAY: Final = 4
MAP: Final = 5
SIG_CONTEXT: Final = "Signature1"


def head(major: int, n: int) -> bytes:
    """The head of a CBOR item of ``major`` type with argument ``n`` (a length or a value)."""
    top = major << 5
    if n < 24:
        return bytes([top | n])
    for extra, width in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if n < 1 << (8 * width):
            return bytes([top | extra]) + n.to_bytes(width, "big")
    msg = f"CBOR length {n} is too large"
    raise ValueError(msg)


def uint(n: int) -> bytes:
    return head(UINT, n)


def bstr(data: bytes) -> bytes:
    return head(BYTES, len(data)) + data


def tstr(text: str) -> bytes:
    data = text.encode("utf-8")
    return head(TEXT, len(data)) + data


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    """COSE's ``Sig_structure`` for COSE_Sign1 (RFC 9052 §4.4): ``["Signature1", protected, b"",
    payload]``, the bytes the signature is over."""
    return head(ARRAY, 4) + tstr(SIG_CONTEXT) + bstr(protected) + bstr(b"") + bstr(payload)
