"""The AWS KMS key-policy statement that lets only an enclave with given PCRs use a key.

As AWS documents for Nitro Enclaves ("Condition keys for AWS Nitro Enclaves" in the KMS developer
guide): ``StringEqualsIgnoreCase`` on ``kms:RecipientAttestation:ImageSha384`` (PCR0) and
``kms:RecipientAttestation:PCR<n>`` for PCR1, PCR2 and (a signed EIF) PCR8.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Mapping, Sequence

DEFAULT_ACTIONS: Final = ("kms:Decrypt",)
CONDITION_OPERATOR: Final = "StringEqualsIgnoreCase"
POLICY_PCRS: Final = (1, 2, 8)


def kms_policy_statement(
    pcrs: Mapping[str, str], *, principal: str | None = None, actions: Sequence[str] = DEFAULT_ACTIONS
) -> dict[str, Any]:
    """The statement for ``pcrs`` (``{"PCR0": hex, …}``; PCR8 is used when present)."""
    condition = {"kms:RecipientAttestation:ImageSha384": pcrs["PCR0"]}
    for index in POLICY_PCRS:
        value = pcrs.get(f"PCR{index}")
        if value is not None:
            condition[f"kms:RecipientAttestation:PCR{index}"] = value
    return {
        "Sid": "Enable enclave data processing",
        "Effect": "Allow",
        "Principal": {"AWS": principal or "arn:aws:iam::ACCOUNT_ID:role/ROLE_NAME"},
        "Action": list(actions) if len(actions) != 1 else actions[0],
        "Resource": "*",
        "Condition": {CONDITION_OPERATOR: condition},
    }
