"""A SoftHSM2 token in a temp dir with a P-384 key on it, for the PKCS#11 signing tests."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
PIN, SO_PIN = "4711-0815", "so-secret"

# Run in a child: the PKCS#11 library is loaded once per process, and the caller's loads it only
# after the token and key exist.
GENERATE = """
import sys, pkcs11
from pkcs11 import Attribute, KeyType
from pkcs11.util.ec import encode_named_curve_parameters
token = pkcs11.lib(sys.argv[1]).get_token(token_label=sys.argv[2])
with token.open(rw=True, user_pin=sys.argv[3]) as session:
    params = session.create_domain_parameters(
        KeyType.EC, {Attribute.EC_PARAMS: encode_named_curve_parameters("secp384r1")}, local=True
    )
    public, _ = params.generate_keypair(store=True, label=sys.argv[4], id=b"\\x01")
    print(bytes(public[Attribute.EC_POINT]).hex())
"""


@dataclass(frozen=True)
class Token:
    label: str
    key_label: str
    public_key: ec.EllipticCurvePublicKey
    pin_file: Path
    conf: Path  # what $SOFTHSM2_CONF must name for the module to find the token

    def uri(self, **query: str) -> str:
        found = {"pin-source": f"file:{self.pin_file}", "module-path": str(MODULE), **query}
        attributes = "&".join(f"{k}={v}" for k, v in found.items() if v)
        return f"pkcs11:token={self.label};object={self.key_label}?{attributes}"


def make_token(util: str, home: Path) -> Token:
    """Initialise a token labelled ``eifbuild`` under ``home`` and generate the key
    ``enclave-signing`` on it; $SOFTHSM2_CONF must already name ``home / "softhsm2.conf"``."""
    (home / "tokens").mkdir()
    conf = home / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {home / 'tokens'}\nobjectstore.backend = file\nlog.level = ERROR\n"
    )
    subprocess.run(
        [util, "--init-token", "--free", "--label", "eifbuild", "--pin", PIN, "--so-pin", SO_PIN],
        check=True, capture_output=True,
    )  # fmt: skip
    point = subprocess.run(
        [sys.executable, "-c", GENERATE, str(MODULE), "eifbuild", PIN, "enclave-signing"],
        check=True, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    der = bytes.fromhex(point)  # CKA_EC_POINT: an OCTET STRING around the point
    public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP384R1(), der[2:])
    pin_file = home / "pin"
    pin_file.write_text(PIN + "\n")
    return Token("eifbuild", "enclave-signing", public, pin_file, conf)
