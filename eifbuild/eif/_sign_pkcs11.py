"""Signing with a key on an HSM or token through PKCS#11, named by an RFC 7512 URI.

``pkcs11:token=LABEL;object=KEY-LABEL?pin-source=file:/path/to/pin&module-path=/path/to/module.so``
(``id=`` with percent-encoded bytes and ``serial=`` also select). The PIN is read from the
``pin-source`` file, else from ``$EIFBUILD_PKCS11_PIN``; a ``pin-value`` in the URI is refused
(it would end up in shell history, process lists and logs) and the PIN is never shown. The module
is ``module-path``, else ``$EIFBUILD_PKCS11_MODULE``. Signing is ``CKM_ECDSA`` over the
Sig_structure's digest, which returns r‖s as COSE wants it. The library is python-pkcs11, the
optional ``pkcs11`` extra.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, unquote_to_bytes

from cryptography.hazmat.primitives.asymmetric import ec

from ..errors import SigningError, first_line

if TYPE_CHECKING:
    from collections.abc import Iterator

    from .sign import SigningCertificate

PIN_ENV: Final = "EIFBUILD_PKCS11_PIN"
MODULE_ENV: Final = "EIFBUILD_PKCS11_MODULE"
_PATH_ATTRIBUTES: Final = frozenset({"token", "object", "id", "serial", "type"})
_QUERY_ATTRIBUTES: Final = frozenset({"pin-source", "module-path"})
_EXTRA_HINT: Final = "pip install 'eifbuild[pkcs11]'"


@dataclass(frozen=True)
class Pkcs11Uri:
    """The parts of an RFC 7512 URI that select a token, a key, the PIN and the module."""

    text: str  # as given (it holds no PIN: pin-value is refused)
    token: str | None = None
    serial: str | None = None
    label: str | None = None
    key_id: bytes | None = None
    pin_source: str | None = None
    module_path: str | None = None


def parse_pkcs11_uri(uri: str) -> Pkcs11Uri:
    """Parse ``uri``; SigningError for attributes that select nothing here or reveal a PIN."""
    if "pin-value" in uri:  # refused before any message could quote the URI and its PIN
        msg = f"PKCS#11 URI: pin-value is not accepted: use pin-source=FILE or ${PIN_ENV}"
        raise SigningError(msg)
    path, _, query = uri.removeprefix("pkcs11:").partition("?")
    found: dict[str, str] = {}
    for part, allowed in ((path, _PATH_ATTRIBUTES), (query, _QUERY_ATTRIBUTES)):
        for name, value in _attributes(uri, part, ";" if part is path else "&"):
            if name not in allowed:
                msg = f"{uri}: unknown PKCS#11 URI attribute {name!r}: expected {', '.join(sorted(allowed))}"
                raise SigningError(msg)
            found[name] = value
    if found.get("type", "private") != "private":
        msg = f"{uri}: type={found['type']}: the signing key is the private key (type=private)"
        raise SigningError(msg)
    key_id = unquote_to_bytes(found["id"]) if "id" in found else None
    if "object" not in found and key_id is None:
        msg = f"{uri}: name the key with object=LABEL or id=%XX…"
        raise SigningError(msg)
    return Pkcs11Uri(
        text=uri,
        token=_text(found, "token"),
        serial=_text(found, "serial"),
        label=_text(found, "object"),
        key_id=key_id,
        pin_source=_text(found, "pin-source"),
        module_path=_text(found, "module-path"),
    )


def _attributes(uri: str, part: str, separator: str) -> Iterator[tuple[str, str]]:
    for item in filter(None, part.split(separator)):
        name, equals, value = item.partition("=")
        if not equals:
            msg = f"{uri}: {name!r} is not an attribute=value pair"
            raise SigningError(msg)
        yield name, value


def _text(found: dict[str, str], name: str) -> str | None:
    return unquote(found[name]) if name in found else None


@dataclass(frozen=True)
class Pkcs11Signer:
    """A private key on a PKCS#11 token that belongs to ``certificate``."""

    certificate: SigningCertificate
    uri: Pkcs11Uri
    token: Any = field(repr=False)  # a python-pkcs11 Token
    pin: str = field(repr=False)
    deterministic: bool = False

    @property
    def name(self) -> str:
        return self.uri.text

    def sign(self, message: bytes) -> bytes:
        hashed = hashlib.new(self.certificate.algorithm.hash_name, message).digest()
        with _session(self) as session:
            import pkcs11  # noqa: PLC0415 - loaded by open_pkcs11_signer already

            key = _private_key(self, session)
            return bytes(_guard(self, key.sign, hashed, mechanism=pkcs11.Mechanism.ECDSA))


def open_pkcs11_signer(uri_text: str, certificate: SigningCertificate) -> Pkcs11Signer:
    """Find the token and key ``uri_text`` names, log in, and check the key is ``certificate``'s."""
    uri = parse_pkcs11_uri(uri_text)
    pkcs11 = _library(uri)
    module = _module_path(uri)
    lib = _guard_uri(uri, pkcs11.lib, module)
    token = _guard_uri(uri, lib.get_token, token_label=uri.token, token_serial=uri.serial)
    signer = Pkcs11Signer(certificate, uri, token, _pin(uri))
    with _session(signer) as session:
        _private_key(signer, session)
        public = _public_key(signer, session)
    if public is not None and not certificate.matches(public):
        msg = f"{uri.text}: the token's key does not match the certificate {certificate.source}"
        raise SigningError(msg)
    return signer


def _library(uri: Pkcs11Uri) -> Any:
    try:
        import pkcs11  # noqa: PLC0415 - an optional extra, only for PKCS#11 keys
    except ImportError:
        msg = f"{uri.text}: signing with a PKCS#11 key needs python-pkcs11: {_EXTRA_HINT}"
        raise SigningError(msg) from None
    return pkcs11


def _module_path(uri: Pkcs11Uri) -> str:
    module = uri.module_path or os.environ.get(MODULE_ENV)
    if not module:
        msg = f"{uri.text}: no PKCS#11 module: add module-path=/path/to/module.so or set ${MODULE_ENV}"
        raise SigningError(msg)
    return module


def _pin(uri: Pkcs11Uri) -> str:
    if uri.pin_source is not None:
        path = Path(uri.pin_source.removeprefix("file://").removeprefix("file:"))
        try:
            return path.read_text(encoding="utf-8").rstrip("\r\n")
        except OSError as exc:
            msg = f"{uri.text}: cannot read the PIN file {path}: {exc.strerror}"
            raise SigningError(msg) from None
    pin = os.environ.get(PIN_ENV)
    if pin is None:
        msg = f"{uri.text}: no PIN: add pin-source=FILE to the URI or set ${PIN_ENV}"
        raise SigningError(msg)
    return pin


@contextlib.contextmanager
def _session(signer: Pkcs11Signer) -> Iterator[Any]:
    """A logged-in read-only session on the signer's token, closed on exit."""
    session = _guard(signer, signer.token.open, user_pin=signer.pin)
    try:
        yield session
    finally:
        session.close()


def _private_key(signer: Pkcs11Signer, session: Any) -> Any:
    import pkcs11  # noqa: PLC0415

    return _guard(signer, session.get_key, pkcs11.ObjectClass.PRIVATE_KEY, **_selector(signer.uri))


def _public_key(signer: Pkcs11Signer, session: Any) -> ec.EllipticCurvePublicKey | None:
    """The public key object beside the private key, if the token keeps one."""
    import pkcs11  # noqa: PLC0415

    try:
        key = session.get_key(pkcs11.ObjectClass.PUBLIC_KEY, **_selector(signer.uri))
        point = bytes(key[pkcs11.Attribute.EC_POINT])
    except pkcs11.PKCS11Error:
        return None
    curve = signer.certificate.public_key.curve
    try:
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, _unwrap_point(point, curve))
    except ValueError:
        msg = f"{signer.uri.text}: the token's key is not on the certificate's curve {curve.name}"
        raise SigningError(msg) from None


def _unwrap_point(point: bytes, curve: ec.EllipticCurve) -> bytes:
    """CKA_EC_POINT is a DER OCTET STRING holding the point; some tokens store the bare point."""
    bare = 2 * ((curve.key_size + 7) // 8) + 1
    if len(point) == bare:
        return point
    header = 2 if point[1] < 0x80 else 2 + (point[1] & 0x7F)
    return point[header:]


def _selector(uri: Pkcs11Uri) -> dict[str, Any]:
    found: dict[str, Any] = {}
    if uri.label is not None:
        found["label"] = uri.label
    if uri.key_id is not None:
        found["id"] = uri.key_id
    return found


def _guard(signer: Pkcs11Signer, call: Any, *args: Any, **kwargs: Any) -> Any:
    return _guard_uri(signer.uri, call, *args, **kwargs)


def _guard_uri(uri: Pkcs11Uri, call: Any, *args: Any, **kwargs: Any) -> Any:
    """``call(*args, **kwargs)``; a PKCS#11 failure as one SigningError line (which never holds the PIN)."""
    import pkcs11  # noqa: PLC0415

    try:
        return call(*args, **kwargs)
    except pkcs11.PinIncorrect:
        msg = f"{uri.text}: the token refused the PIN (wrong PIN)"
    except pkcs11.NoSuchToken:
        msg = f"{uri.text}: no such token in {_module_path(uri)}"
    except pkcs11.NoSuchKey:
        msg = f"{uri.text}: no such private key on the token"
    except pkcs11.MultipleObjectsReturned:
        msg = f"{uri.text}: more than one private key matches: add id= or a more specific object="
    except pkcs11.PKCS11Error as exc:
        detail = f": {first_line(exc)}" if str(exc) else ""
        msg = f"{uri.text}: PKCS#11 error {type(exc).__name__}{detail}"
    raise SigningError(msg)
