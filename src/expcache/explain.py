"""Why would this call miss? Identity manifests and the explain-a-miss report.

A key is a digest: by itself it cannot say *what* changed. So every memoized function keeps a
small **manifest** beside its entries, under ``[ns:]ex<V>:<tag>:manifest``: for each recent
identity of the function (its code, defaults, closure variables, globals, called functions,
signature/version, namespace, key format), the digest of every part. It is written on a miss,
at most once per process and function (off the hit path), and read by ``Memoized.explain``,
which compares the current identity with the nearest stored one part by part, and the call's
arguments with the nearest stored call of the same identity argument by argument (entries
carry per-argument digests in their metadata).

Manifests go through the same verified envelope as values (digest or HMAC), so a garbage or
forged manifest is ignored like any corrupt entry.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final

from .entries import MomentsEntry, ValueEntry
from .errors import BackendError, SerdeError
from .serde import Serde

if TYPE_CHECKING:
    from .calls import Core

__all__ = ["MANIFEST_SUFFIX", "Explanation", "explain_call", "note_identity"]

log = logging.getLogger("expcache")

MANIFEST_SUFFIX: Final = "manifest"
MAX_IDENTITIES: Final = 16  # recent identities kept per function and namespace
_SCAN_BATCH: Final = 200

Parts = dict[str, str]  # part name -> hex digest


class _Json:
    """Manifests are plain data: stored as JSON inside the verified envelope, so reading one
    never unpickles anything (and a user's own payload codec never sees them)."""

    def serialize(self, key: str, value: Any) -> tuple[bytes, int]:
        return json.dumps(value, sort_keys=True).encode(), 1

    def deserialize(self, key: str, value: bytes, flags: int) -> Any:
        return json.loads(value)


def manifest_key(core: Core) -> str:
    return core.keys.prefix + MANIFEST_SUFFIX


def manifest_serde(core: Core) -> Serde:
    serde = core.__dict__.get("_manifest_serde")
    if serde is None:
        serde = Serde(core.serde.signing_key, codec=_Json())
        core.__dict__["_manifest_serde"] = serde
    return serde


def _parts(core: Core) -> Parts:
    return {name: digest.hex() for name, digest in core.keys.manifest().items()}


def _read(core: Core) -> tuple[dict[str, Any], Any, bool] | None:
    """(manifest, cas token, present) or None when the backend failed."""
    key = manifest_key(core)
    try:
        data, token = core.backend.gets(key)
    except BackendError:
        return None
    if data is None:
        return {}, token, False
    try:
        entry = manifest_serde(core).loads(key, data)
    except SerdeError:
        return {}, token, True  # a bad manifest is replaced
    value = entry.value if type(entry) is ValueEntry else None
    return (value if isinstance(value, dict) else {}), token, True


def note_identity(core: Core) -> None:
    """Record this process's identity of the function in its manifest (once per process).

    Called on a miss. When DEBUG logging is on and the identity is new, log which parts
    differ from the nearest identity already stored: the answer to "why is my cache not
    hitting" for the common case of an edited function or a changed closure.
    """
    if core.manifest_noted:
        return
    core.manifest_noted = True
    try:
        parts = _parts(core)
    except Exception as exc:  # never let diagnostics break a call
        log.debug("expcache: %s: no identity manifest: %r", core.label, exc)
        return
    identity = core.keys.identity.hex()
    for _ in range(5):
        read = _read(core)
        if read is None:
            return
        manifest, token, present = read
        if identity in manifest:
            return
        if manifest and log.isEnabledFor(logging.DEBUG):
            near, diff = _nearest(parts, manifest)
            log.debug(
                "expcache: %s: a new identity of this function (%s): %s differ from the "
                "stored identity %s",
                core.label, identity[:12], ", ".join(diff) or "nothing", near[:12],
            )
        manifest = dict(manifest)
        manifest[identity] = {"parts": parts, "created": time.time()}
        while len(manifest) > MAX_IDENTITIES:
            oldest = min(manifest, key=lambda k: manifest[k].get("created", 0.0))
            del manifest[oldest]
        key = manifest_key(core)
        try:
            data = manifest_serde(core).dumps(key, ValueEntry(manifest, core.meta(0.0)))
            ok = core.backend.cas(key, data, token) if present else core.backend.add(key, data)
        except Exception as exc:  # diagnostics only: never fail a call over a manifest
            log.debug("expcache: %s: identity manifest not written: %r", core.label, exc)
            return
        if ok:
            return


def _nearest(parts: Parts, manifest: Mapping[str, Any]) -> tuple[str, list[str]]:
    """The stored identity sharing most parts with ``parts``, and the parts that differ."""
    best, best_diff = "", list(parts)
    for identity, record in manifest.items():
        stored = record.get("parts", {}) if isinstance(record, Mapping) else {}
        names = sorted(set(parts) | set(stored))
        diff = [n for n in names if parts.get(n) != stored.get(n)]
        if not best or len(diff) < len(best_diff):
            best, best_diff = identity, diff
    return best, best_diff


def _describe_part(name: str, mine: str | None, theirs: str | None) -> str:
    kind, _, what = name.partition(" ")
    if mine is None:
        return f"{name}: only in the stored identity"
    if theirs is None:
        return f"{name}: new in this identity"
    labels = {
        "code": "the function's code changed",
        "defaults": "a default value changed",
        "kwdefaults": "a keyword-only default changed",
        "closure": f"closure variable {what!r} has another value",
        "global": f"global {what!r} has another value",
        "function": f"called function {what}() changed",
        "signature": "the explicit signature= differs",
        "version": "version= differs",
        "namespace": "the namespace differs",
        "key_format": "the key format differs (another expcache version)",
        "label": "the function's name differs",
    }
    return labels.get(kind, f"{name} differs")


@dataclass
class Explanation:
    """The report of ``Memoized.explain``; ``str()`` reads as a short paragraph."""

    function: str
    key: str
    status: str  # "hit", "miss", "unknown" (the backend failed)
    reasons: list[str] = field(default_factory=list)
    nearest_identity: str | None = None
    differing_parts: list[str] = field(default_factory=list)
    differing_arguments: list[str] = field(default_factory=list)

    @property
    def would_hit(self) -> bool:
        return self.status == "hit"

    def __str__(self) -> str:
        head = {
            "hit": f"{self.function}: this call would be answered from the cache ({self.key})",
            "miss": f"{self.function}: this call would miss ({self.key})",
            "unknown": f"{self.function}: cannot tell ({self.key})",
        }[self.status]
        return "\n".join([head, *(f"  - {r}" for r in self.reasons)])


def explain_call(core: Core, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> Explanation:
    key = core.keys(args, kwargs)
    report = Explanation(core.label, key, "miss")
    try:
        data = core.backend.get(key)
    except BackendError as exc:
        report.status = "unknown"
        report.reasons.append(f"the backend failed: {exc}")
        return report
    if data is not None:
        try:
            entry = core.serde.loads(key, data)
        except SerdeError as exc:
            report.reasons.append(f"an entry is stored under this key but it is corrupt ({exc})")
            return report
        if core.policy is None and type(entry) is ValueEntry:
            report.status = "hit"
            return report
        if core.policy is not None and type(entry) is MomentsEntry:
            if core.policy.done(entry.moments):
                report.status = "hit"
            else:
                report.reasons.append(
                    f"its running moments have not converged yet (n={entry.moments.n}): "
                    "the call evaluates again and folds in the sample"
                )
            return report
        report.reasons.append("the entry under this key is of another kind")
        return report
    read = _read(core)
    if read is None:
        report.status = "unknown"
        report.reasons.append("the backend failed while reading the manifest")
        return report
    manifest = read[0]
    identity = core.keys.identity.hex()
    if not manifest:
        report.reasons.append(
            f"nothing of {core.label} is recorded in namespace {core.options.namespace!r}: "
            "it was never computed here (or by an expcache without manifests)"
        )
        return report
    if identity not in manifest:
        parts = _parts(core)
        near, diff = _nearest(parts, manifest)
        stored = manifest[near].get("parts", {})
        report.nearest_identity = near
        report.differing_parts = diff
        report.reasons.append(
            f"the function's identity changed since the nearest stored one ({near[:12]}):"
        )
        report.reasons.extend(
            "  " + _describe_part(n, parts.get(n), stored.get(n)) for n in diff
        )
        return report
    args_now = core.keys.argument_digests(args, kwargs)
    near_args = _nearest_call(core, args_now)
    if near_args is None:
        report.reasons.append(
            "the function is unchanged, but no entry of this version holds this call"
        )
        return report
    differing = sorted(n for n in set(args_now) | set(near_args) if args_now.get(n) != near_args.get(n))
    report.differing_arguments = differing
    report.reasons.append(
        "the function is unchanged; the nearest stored call differs in argument(s) "
        + ", ".join(repr(n) for n in differing)
    )
    return report


def _nearest_call(core: Core, args_now: Mapping[str, bytes]) -> dict[str, bytes] | None:
    """Argument digests of the stored call of this identity sharing most arguments."""
    from .keys import unpack_argument_digests

    identity = core.keys.identity
    best: dict[str, bytes] | None = None
    best_same = -1
    prefix = core.keys.prefix
    batch: list[str] = []

    def scan(keys: Iterable[str]) -> None:
        nonlocal best, best_same
        found = core.backend.get_many(list(keys))
        for k, data in found.items():
            try:
                _, meta, _ = core.serde.read_meta(k, data)
            except SerdeError:
                continue
            if meta.identity != identity or not meta.args:
                continue
            stored = unpack_argument_digests(meta.args)
            same = sum(stored.get(n) == d for n, d in args_now.items())
            if same > best_same:
                best, best_same = stored, same

    try:
        for k in core.backend.iter_keys(prefix):
            if k.count(":") != prefix.count(":") or k.endswith(MANIFEST_SUFFIX):
                continue  # leases, chunks, the manifest
            batch.append(k)
            if len(batch) >= _SCAN_BATCH:
                scan(batch)
                batch.clear()
        if batch:
            scan(batch)
    except BackendError:
        return best
    return best
