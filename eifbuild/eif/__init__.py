"""The EIF format: reader, writer, checker, metadata, PCRs and signing.

``format`` holds the layout both the reader and the writer follow; :func:`pack` (in ``writer``) is
the one way an EIF is made from a kernel, a cmdline and ramdisks (``eifbuild pack`` and a build's
EIF step); :func:`open_signer` (in ``keyspec``) the one way a key spec (a PEM file, a KMS key ARN,
a ``pkcs11:`` URI) becomes a signer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_face

if TYPE_CHECKING:
    from .buildtime import BuildTime, parse_build_time
    from .checker import describe, load_expected_pcrs, verify
    from .detached import DetachedSigner, export_payload
    from .format import (
        DEFAULT_CPUS,
        DEFAULT_MEM,
        EIF_VERSION,
        FLAG_AARCH64,
        HEADER_SIZE,
        SECTION_HEADER_SIZE,
        SectionType,
        pcr_role,
    )
    from .keyspec import key_kind, open_signer, signs_deterministically
    from .metadata import (
        CUSTOM_METADATA_MAX_SIZE,
        EIF_BUILD_TOOL,
        EIF_BUILD_TOOL_VERSION,
        EifMetadata,
        JsonValue,
        dumps,
        load_custom_metadata,
        read_kernel_config_text,
    )
    from .pcr import HASH_ALGOS, HashAlgo, Measurements, parse_algo
    from .reader import EifImage, Section, iter_section, measure, read_eif, scan, section_gaps
    from .sign import Signer
    from .writer import PackRequest, min_enclave_memory_mib, pack, sign_eif

EXPORTS = {
    "read_kernel_config_text": ".metadata",
    "section_gaps": ".reader",
    "BuildTime": ".buildtime",
    "parse_build_time": ".buildtime",
    "describe": ".checker",
    "load_expected_pcrs": ".checker",
    "verify": ".checker",
    "DetachedSigner": ".detached",
    "export_payload": ".detached",
    "DEFAULT_CPUS": ".format",
    "DEFAULT_MEM": ".format",
    "EIF_VERSION": ".format",
    "FLAG_AARCH64": ".format",
    "HEADER_SIZE": ".format",
    "SECTION_HEADER_SIZE": ".format",
    "SectionType": ".format",
    "pcr_role": ".format",
    "key_kind": ".keyspec",
    "open_signer": ".keyspec",
    "signs_deterministically": ".keyspec",
    "CUSTOM_METADATA_MAX_SIZE": ".metadata",
    "EIF_BUILD_TOOL": ".metadata",
    "EIF_BUILD_TOOL_VERSION": ".metadata",
    "EifMetadata": ".metadata",
    "JsonValue": ".metadata",
    "dumps": ".metadata",
    "load_custom_metadata": ".metadata",
    "HASH_ALGOS": ".pcr",
    "HashAlgo": ".pcr",
    "Measurements": ".pcr",
    "parse_algo": ".pcr",
    "EifImage": ".reader",
    "Section": ".reader",
    "iter_section": ".reader",
    "measure": ".reader",
    "read_eif": ".reader",
    "scan": ".reader",
    "Signer": ".sign",
    "PackRequest": ".writer",
    "min_enclave_memory_mib": ".writer",
    "pack": ".writer",
    "sign_eif": ".writer",
}

__all__ = [
    "CUSTOM_METADATA_MAX_SIZE",
    "DEFAULT_CPUS",
    "DEFAULT_MEM",
    "EIF_BUILD_TOOL",
    "EIF_BUILD_TOOL_VERSION",
    "EIF_VERSION",
    "FLAG_AARCH64",
    "HASH_ALGOS",
    "HEADER_SIZE",
    "SECTION_HEADER_SIZE",
    "BuildTime",
    "DetachedSigner",
    "EifImage",
    "EifMetadata",
    "HashAlgo",
    "JsonValue",
    "Measurements",
    "PackRequest",
    "Section",
    "SectionType",
    "Signer",
    "describe",
    "dumps",
    "export_payload",
    "iter_section",
    "key_kind",
    "load_custom_metadata",
    "load_expected_pcrs",
    "measure",
    "min_enclave_memory_mib",
    "open_signer",
    "pack",
    "parse_algo",
    "parse_build_time",
    "pcr_role",
    "read_eif",
    "read_kernel_config_text",
    "scan",
    "section_gaps",
    "sign_eif",
    "signs_deterministically",
    "verify",
]

if not TYPE_CHECKING:  # type checkers see the imports above
    __getattr__, __dir__ = lazy_face(__name__, EXPORTS)
