"""eifbuild: bit-for-bit reproducible AWS Nitro Enclave images (EIF) from pinned inputs."""

from __future__ import annotations

__version__ = "0.1.0"
