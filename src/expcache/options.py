"""The options of a memoized function: validated once, frozen, shared by every call path.

``Memoized`` takes these as keyword arguments (its signature is the source the Hydra app
derives the ``policy`` schema from) and keeps them here. Frozen because the call paths
prepare state from them once (the key maker, the serde, the lease factory): changing
``m.time_threshold = "auto"`` behind the object's back used to make the next call raise.
A different configuration is a different memoized function: ``Memoized.replace(**changes)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

from . import _validate as _v
from .errors import ConfigError
from .policy import RepetitionPolicy

__all__ = ["NAMESPACE_PATTERN", "Options"]

NAMESPACE_PATTERN = r"[A-Za-z0-9_.\-]{0,64}"


@dataclass(frozen=True)
class Options:
    """See ``Memoized`` for what each option means."""

    time_threshold: float | Literal["auto"] = 0.0
    repeat: RepetitionPolicy | None = None
    ignore_args: tuple[str, ...] = ()
    signature: bytes | None = None
    version: str | None = None
    namespace: str = ""
    pickle_args: bool | Literal["warn"] = False
    signing_key: bytes | None = field(default=None, repr=False)
    lease: bool = True
    lease_ttl: float = 10.0
    lease_max_wait: float = 600.0
    max_cas_retries: int = 200
    expire: float = 0.0
    name: str | None = None
    codec: Any = field(default=None, compare=False)

    def __post_init__(self) -> None:
        fix = object.__setattr__  # frozen: normalise in place, once
        if self.time_threshold != "auto":
            fix(self, "time_threshold", _v.number(
                "time_threshold", self.time_threshold, ge=0, unit="seconds",
                hint="or 'auto' (store when computing took clearly longer than a lookup)",
            ))
        if self.repeat is not None and not isinstance(self.repeat, RepetitionPolicy):
            raise ConfigError(
                param="repeat", value=self.repeat, expected="a RepetitionPolicy or None"
            )
        fix(self, "ignore_args", _v.names("ignore_args", self.ignore_args))
        if self.signature is not None and not isinstance(self.signature, bytes):
            raise ConfigError(param="signature", value=self.signature, expected="bytes or None")
        _v.text("version", self.version, allow_none=True)
        _v.text(
            "namespace",
            self.namespace,
            pattern=NAMESPACE_PATTERN,
            describe="at most 64 characters from [A-Za-z0-9_.-]",
        )
        if self.pickle_args != "warn":
            _v.boolean("pickle_args", self.pickle_args, hint="or 'warn'")
        key: Any = self.signing_key
        if isinstance(key, str):
            fix(self, "signing_key", key.encode() or None)
        elif key is not None and not isinstance(key, bytes):
            raise ConfigError(
                param="signing_key", value=key, expected="bytes, str or None", secret=True
            )
        elif key == b"":
            fix(self, "signing_key", None)
        _v.boolean("lease", self.lease)
        fix(self, "lease_ttl", _v.number("lease_ttl", self.lease_ttl, gt=0, unit="seconds"))
        fix(self, "lease_max_wait", _v.number(
            "lease_max_wait", self.lease_max_wait, gt=0, unit="seconds"
        ))
        fix(self, "max_cas_retries", _v.integer("max_cas_retries", self.max_cas_retries, ge=1))
        fix(self, "expire", _v.number(
            "expire", self.expire, ge=0, unit="seconds", hint="0 means never expire"
        ))
        _v.text("name", self.name, allow_none=True)
        if self.codec is not None and not (
            callable(getattr(self.codec, "serialize", None))
            and callable(getattr(self.codec, "deserialize", None))
        ):
            raise ConfigError(
                param="codec",
                value=self.codec,
                expected="None or a pymemcache-style serde with serialize(key, value) -> "
                "(bytes, flags) and deserialize(key, data, flags)",
            )

    def replace(self, **changes: Any) -> Options:
        return dataclasses.replace(self, **changes)

    def public(self) -> dict[str, Any]:
        """JSON-friendly options for records (the signing key reduced to whether there is one)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["signing_key"] = self.signing_key is not None
        out["signature"] = None if self.signature is None else self.signature.hex()
        if self.repeat is not None:
            out["repeat"] = dataclasses.asdict(self.repeat)
        out["ignore_args"] = list(self.ignore_args)
        out["codec"] = None if self.codec is None else type(self.codec).__qualname__
        return out
