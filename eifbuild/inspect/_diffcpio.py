"""Why two ramdisks differ, at file level: members added, removed or changed (and what changed),
``/cmd`` and ``/env`` as argv/env entries, and when every member is equal, what else makes the bytes
differ (member order, inode numbers, gzip header, compression, padding). Pure functions over
:class:`~._summary.RamdiskSummary`; each result is ``(where, detail)``.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from ._stream import GzipHeader
    from ._summary import MemberSummary, RamdiskSummary

Found = tuple[str, str]
_MAX_LISTED: Final = 8


def ramdisk_changes(a: RamdiskSummary, b: RamdiskSummary) -> list[Found]:
    if a.sha256 == b.sha256:
        return []
    where = f"ramdisk[{a.index}]"
    if "opaque" in (a.container.compression, b.container.compression):
        return [(where, _opaque(a, b))]
    found = member_changes(a, b)
    reasons = container_reasons(a, b, members_equal=not found)
    if reasons:
        found.append((where, f"{a.label}: {'; '.join(reasons)}"))
    return found


def _opaque(a: RamdiskSummary, b: RamdiskSummary) -> str:
    kinds = f"{a.container.compression} → {b.container.compression}"
    return (
        f"{a.label}: not a cpio archive ({kinds}); bytes differ: sha256 {a.sha256[:16]}… → "
        f"{b.sha256[:16]}…, size {a.size} → {b.size}"
    )


# ---------------------------------------------------------------------------------------------
# members


def _index(ramdisk: RamdiskSummary) -> dict[str, MemberSummary]:
    return {m.path: m for m in ramdisk.members}  # a repeated name: the kernel keeps the last one


def member_changes(a: RamdiskSummary, b: RamdiskSummary) -> list[Found]:
    ia, ib = _index(a), _index(b)
    where = f"ramdisk[{a.index}]"
    found: list[Found] = []
    for path in dict.fromkeys([*ia, *ib]):
        ma, mb = ia.get(path), ib.get(path)
        if ma is None and mb is not None:
            found.append((f"{where}:{path}", f"added: {_describe(mb)}"))
        elif mb is None and ma is not None:
            found.append((f"{where}:{path}", f"removed: {_describe(ma)}"))
        elif ma is not None and mb is not None:
            fields = field_changes(ma, mb)
            if fields:
                found.append((f"{where}:{path}", "; ".join(fields)))
    return found


def _describe(m: MemberSummary) -> str:
    what = f"{m.kind} {m.mode:04o} {m.uid}:{m.gid}"
    if m.kind == "file":
        what += f", {m.size} bytes, sha256 {m.sha256[:16]}…"
    if m.target is not None:
        what += f" -> {m.target}"
    return what


def _time(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def shown_fields(m: MemberSummary) -> dict[str, str]:
    """The header fields compared member by member, as shown in a report."""
    return {
        "type": m.kind,
        "mode": f"{m.mode:04o}",
        "uid/gid": f"{m.uid}:{m.gid}",
        "mtime": _time(m.mtime),
        "symlink target": repr(m.target),
        "device numbers": f"{m.rdev[0]},{m.rdev[1]}",
        "hard-link group": "[" + ", ".join(m.links) + "]",
    }


def field_changes(a: MemberSummary, b: MemberSummary) -> list[str]:
    """What differs between two members of the same path, content first."""
    found = []
    if a.text is not None and b.text is not None and a.text != b.text:
        found += config_entries(a.path, a.text, b.text)
    elif a.sha256 != b.sha256 and a.kind != "symlink":
        found.append(f"content sha256 {a.sha256[:16]}… → {b.sha256[:16]}…, size {a.size} → {b.size}")
    fa, fb = shown_fields(a), shown_fields(b)
    found += [f"{name} {fa[name]} → {fb[name]}" for name in fa if fa[name] != fb[name]]
    return found


def config_entries(path: str, a: bytes, b: bytes) -> list[str]:
    """``/cmd`` as argv entries, ``/env`` as variables: one line each, as init.c reads them."""
    la, lb = _lines(a), _lines(b)
    if path == "env":
        return _env_changes(la, lb)
    found = [f"argv[{i}] {x!r} → {y!r}" for i, (x, y) in enumerate(zip(la, lb, strict=False)) if x != y]
    found += [f"argv[{i}] {x!r} removed" for i, x in enumerate(la[len(lb) :], len(lb))]
    found += [f"argv[{i}] {y!r} added" for i, y in enumerate(lb[len(la) :], len(la))]
    return found or ["same entries, different line endings"]


def _lines(data: bytes) -> list[str]:
    text = data.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    return lines[:-1] if lines and lines[-1] == "" else lines


def _env_changes(la: list[str], lb: list[str]) -> list[str]:
    va = dict(line.partition("=")[::2] for line in la)
    vb = dict(line.partition("=")[::2] for line in lb)
    found = []
    for key in dict.fromkeys([*va, *vb]):
        if key not in vb:
            found.append(f"{key} removed")
        elif key not in va:
            found.append(f"{key}={vb[key]!r} added")
        elif va[key] != vb[key]:
            found.append(f"{key} {va[key]!r} → {vb[key]!r}")
    if not found:
        found.append("same variables, different order" if la != lb else "same entries, different bytes")
    return found


# ---------------------------------------------------------------------------------------------
# the rest of the bytes


def container_reasons(a: RamdiskSummary, b: RamdiskSummary, *, members_equal: bool) -> list[str]:
    """Differences outside the members' fields: compression, gzip header, member order, inode
    numbering, padding; with ``members_equal``, a catch-all if none of them explains the bytes."""
    reasons = []
    ca, cb = a.container, b.container
    if ca.compression != cb.compression:
        same = " (the same cpio archive inside)" if a.cpio_sha256 == b.cpio_sha256 else ""
        reasons.append(f"compression {ca.compression} → {cb.compression}{same}")
    elif ca.gzip_header != cb.gzip_header:
        reasons.append(f"gzip header {_gzip(ca.gzip_header)} → {_gzip(cb.gzip_header)}")
    elif ca.compression == "gzip" and a.cpio_sha256 == b.cpio_sha256:
        reasons.append("same cpio archive inside, compressed differently (level or compressor)")
    if not members_equal:
        return reasons  # renumbered inodes, moved members and new padding follow from the changes
    order_a = [m.path for m in a.members]
    order_b = [m.path for m in b.members]
    common = set(order_a) & set(order_b)
    if [p for p in order_a if p in common] != [p for p in order_b if p in common]:
        reasons.append(f"member order differs (first: {_first_moved(order_a, order_b, common)})")
    reasons += _numbering(a, b)
    if (a.trailing, a.trailing_nonzero) != (b.trailing, b.trailing_nonzero):
        reasons.append(f"padding after the trailer {a.trailing} → {b.trailing} bytes")
    if not reasons and a.cpio_sha256 != b.cpio_sha256:
        reasons.append("header fields not compared above differ (c_check or the trailer's fields)")
    return reasons


def _first_moved(order_a: list[str], order_b: list[str], common: set[str]) -> str:
    pairs = zip((p for p in order_a if p in common), (p for p in order_b if p in common), strict=True)
    x, y = next((x, y) for x, y in pairs if x != y)
    return f"{x!r} ↔ {y!r}"


def _numbering(a: RamdiskSummary, b: RamdiskSummary) -> list[str]:
    ia, ib = _index(a), _index(b)
    common = [p for p in ia if p in ib]
    found = []
    for label, get in (("inode numbering", _ino), ("link counts", _nlink), ("c_dev numbers", _dev)):
        moved = [p for p in common if get(ia[p]) != get(ib[p])]
        if moved:
            listed = ", ".join(moved[:_MAX_LISTED]) + (" …" if len(moved) > _MAX_LISTED else "")
            found.append(f"{label} differ for {len(moved)} members ({listed})")
    return found


def _ino(m: MemberSummary) -> int:
    return m.ino


def _nlink(m: MemberSummary) -> int:
    return m.nlink


def _dev(m: MemberSummary) -> tuple[int, int]:
    return m.dev


def _gzip(header: GzipHeader | None) -> str:
    if header is None:
        return "(unreadable)"
    return "{" + ", ".join(f"{k}={v!r}" for k, v in dataclasses.asdict(header).items()) + "}"
