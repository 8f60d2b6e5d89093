"""The one error tree of eifbuild.

Every failure a user can cause (bad config, bad archive, bad EIF, network, hash mismatch, a tool
that failed) is an :class:`EifbuildError` subclass carrying structured fields. The message is a
single line that names the object (file, key, URL) and what was expected; the CLI prints it as
``error: <message>`` and exits 2. Library code raises these and never prints.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable
    from pathlib import Path


class EifbuildError(Exception):
    """Root of every error eifbuild raises on purpose: the operation cannot proceed.

    The tree, by what went wrong (every one is exit code 2 at the command line):

    - :class:`ConfigError`: a build description the user wrote (eif.toml, a recipe, eif.lock, a
      kernel build spec) is invalid;
    - :class:`UsageError`: a command-line value, or an argument given to a library function;
    - :class:`InputError`: an input's data is not what was expected (a PCR or metadata JSON file,
      a kernel config, a cmd or env value), and its kinds :class:`EifFormatError` (an EIF) and
      :class:`ArchiveError` (a cpio/tar/zip archive or image layer);
    - :class:`FileAccessError`: a file cannot be read or written (missing, not a regular file,
      unreadable, changed while it was read);
    - :class:`FetchError` and :class:`HashMismatch` (downloads and pins), :class:`StoreError`,
      :class:`ToolError` (zig, qemu, skopeo …), :class:`SigningError`, :class:`RemoteCacheError`;
    - :class:`AttestationError`: an attestation document was checked and is not verified (the one
      kind that is not exit 2: ``eifbuild attestation verify`` exits 1 with it).
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


def first_line(exc: BaseException) -> str:
    """The first line of a library exception's text (its type's name when it has none), to quote
    inside one of our one-line messages."""
    text = str(exc) or type(exc).__name__
    return text.splitlines()[0]


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest of ``choices`` to a misspelt ``word``, else ``""``."""
    import difflib  # noqa: PLC0415 - only on the way to an error

    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class LocatedError(EifbuildError):
    """An error at a place: a file, a line in it, a key (or command-line option) — each optional."""

    def __init__(
        self, message: str, *, path: str | Path | None = None, key: str | None = None, line: int | None = None
    ) -> None:
        self.key = key
        self.line = line
        self._place(
            message, path, None if line is None else f"line {line}", None if key is None else f"key {key!r}"
        )

    def _place(self, message: str, path: str | Path | None, *details: str | None) -> None:
        where = [str(path)] if path is not None else []
        where += [detail for detail in details if detail is not None]
        EifbuildError.__init__(self, f"{', '.join(where)}: {message}" if where else message)
        self.reason = message  # without the location, for a caller that names another place
        self.path = path


class ConfigError(LocatedError):
    """An eif.toml, recipe, eif.lock or kernel build spec is invalid."""


class UsageError(LocatedError):
    """A command-line value (``key`` names the option) or a library function's argument is invalid."""


class InputError(LocatedError):
    """An input's data is not what was expected (a PCR or metadata JSON file, a kernel config, a
    value for /cmd or /env, an image reference, an OCI layout's index)."""


class FileAccessError(LocatedError):
    """A file cannot be read or written: missing, not a regular file, unreadable, or it changed
    while it was read."""


class EifFormatError(InputError):
    """An EIF file (or bytes claiming to be one) is malformed."""

    def __init__(
        self,
        message: str,
        *,
        path: str | Path | None = None,
        offset: int | None = None,
        section: int | None = None,
    ) -> None:
        self.key = self.line = None
        self.offset = offset
        self.section = section
        where_section = None if section is None else f"section {section}"
        self._place(message, path, where_section, None if offset is None else f"offset {offset}")


class ArchiveError(InputError):
    """A cpio/tar/zip archive or image layer is malformed or unsafe (e.g. a path escaping the tree)."""

    def __init__(self, message: str, *, path: str | Path | None = None, member: str | None = None) -> None:
        self.key = self.line = None
        self.member = member
        self._place(message, path, None if member is None else f"member {member!r}")


class FetchError(EifbuildError):
    """A download (HTTP, file://, registry) failed."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(f"{url}: {message}" if url else message)
        self.url = url


class HashMismatch(EifbuildError):
    """Content does not match its pin."""

    def __init__(self, what: str, *, expected: str, actual: str) -> None:
        super().__init__(f"{what}: hash mismatch: expected {expected}, got {actual}")
        self.what = what
        self.expected = expected
        self.actual = actual


class StoreError(EifbuildError):
    """The content-addressed store is unusable or an entry is corrupt."""

    def __init__(self, message: str, *, key: str | None = None) -> None:
        super().__init__(f"store entry {key}: {message}" if key else message)
        self.key = key


class ToolError(EifbuildError):
    """An external tool (zig, make, qemu, skopeo, ...) failed or is missing."""

    def __init__(
        self, message: str, *, cmd: list[str] | None = None, returncode: int | None = None, output: str = ""
    ) -> None:
        super().__init__(message)
        self.cmd = cmd
        self.returncode = returncode
        self.output = output


class SigningError(EifbuildError):
    """A signing key or certificate is unusable (wrong type, mismatch, expired)."""


class RemoteCacheError(EifbuildError):
    """The shared build cache (S3) cannot be reached or used; a build warns and goes on without it
    unless the remote is required (``EIFBUILD_REQUIRE_REMOTE=1``)."""

    def __init__(self, message: str, *, url: str | None = None) -> None:
        super().__init__(f"remote cache {url}: {message}" if url else message)
        self.url = url


class AttestationError(EifbuildError):
    """An attestation document is not verified: ``code`` names the rule that refused it and why,
    ``<rule>.<what>`` (``structure.alg``, ``chain.expired``, ``signature.invalid``, ``policy.pcr``
    …), and the message is ``<code>: <detail>``. ``eifbuild attestation verify`` prints it and exits
    1 (a check ran and failed), not 2."""

    def __init__(self, code: str, detail: str) -> None:
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail

    @property
    def rule(self) -> str:
        """The rule that refused the document: structure, chain, signature or policy."""
        return self.code.partition(".")[0]


class ProvenanceError(EifbuildError):
    """A provenance file is not verified: its envelope's signature, its statement's shape, or (with
    an EIF) the subject's digests or the PCRs. ``eifbuild provenance verify`` prints it and exits 1."""
