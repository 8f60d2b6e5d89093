"""The EIF format: reader, writer, checker, metadata, PCRs and signing.

``format`` holds the layout both the reader and the writer follow; :func:`pack` (in ``writer``) is
the one way an EIF is made from a kernel, a cmdline and ramdisks (``eifbuild pack`` and a build's
EIF step); :func:`open_signer` (in ``keyspec``) the one way a key spec (a PEM file, a KMS key ARN,
a ``pkcs11:`` URI) becomes a signer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..util.lazy import lazy_exports

if TYPE_CHECKING:
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
        make_metadata,
        read_kernel_config,
        read_kernel_config_text,
    )
    from .pcr import DEFAULT_ALGO, HASH_ALGOS, HashAlgo, Measurements, parse_algo
    from .reader import (
        EifImage,
        Section,
        SectionGaps,
        iter_section,
        measure,
        read_eif,
        read_section,
        scan,
        section_gaps,
    )
    from .sign import PemSigner, Signer
    from .writer import PackRequest, SectionSource, min_enclave_memory_mib, pack, sign_eif, write_eif

__all__ = [
    "CUSTOM_METADATA_MAX_SIZE",
    "DEFAULT_ALGO",
    "DEFAULT_CPUS",
    "DEFAULT_MEM",
    "EIF_BUILD_TOOL",
    "EIF_BUILD_TOOL_VERSION",
    "EIF_VERSION",
    "FLAG_AARCH64",
    "HASH_ALGOS",
    "HEADER_SIZE",
    "SECTION_HEADER_SIZE",
    "DetachedSigner",
    "EifImage",
    "EifMetadata",
    "HashAlgo",
    "JsonValue",
    "Measurements",
    "PackRequest",
    "PemSigner",
    "Section",
    "SectionGaps",
    "SectionSource",
    "SectionType",
    "Signer",
    "describe",
    "dumps",
    "export_payload",
    "iter_section",
    "key_kind",
    "load_custom_metadata",
    "load_expected_pcrs",
    "make_metadata",
    "measure",
    "min_enclave_memory_mib",
    "open_signer",
    "pack",
    "parse_algo",
    "pcr_role",
    "read_eif",
    "read_kernel_config",
    "read_kernel_config_text",
    "read_section",
    "scan",
    "section_gaps",
    "sign_eif",
    "signs_deterministically",
    "verify",
    "write_eif",
]

if not TYPE_CHECKING:  # type checkers see the imports above; a name missing there is an error
    __getattr__ = lazy_exports(__name__, __file__)
