"""One registry idiom for every extension point (methods, LRP rules and presets, fix-ups).

An entry registers at its definition site (``@METHODS.register`` on a class with a ``name``, or
a decorator of the extension point's own built on `Registry.add`); `Registry.list` names them and
`Registry.get` looks one up, with one error for an unknown name whatever the extension point:
"unknown KIND 'x'; did you mean 'y'? available: ...".
"""

from __future__ import annotations

import builtins
import difflib
from collections.abc import Iterator, MutableMapping, Sequence
from typing import Any, Generic, TypeVar, overload

from .errors import OnnxAttrError

T = TypeVar("T")
D = TypeVar("D")
_REQUIRED = object()  # `get` without a default: an unknown name is an error


class Registry(MutableMapping[str, T], Generic[T]):
    """Entries of one extension point by name, in registration order. A mapping, so existing
    readers (``name in R``, ``R[name]``, ``R.items()``) work; `get` is the checked lookup (unlike
    ``dict.get``, an unknown name is an error unless a default is given)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T] = {}

    def add(self, name: str, entry: T) -> T:
        """Register `entry` as `name` (a later registration under one name replaces the earlier)."""
        self._entries[name] = entry
        return entry

    def register(self, entry: T) -> T:
        """Class decorator: register a class under its ``name`` attribute."""
        return self.add(entry.name, entry)  # type: ignore[attr-defined]

    def list(self) -> builtins.list[str]:
        """The registered names, sorted."""
        return sorted(self._entries)

    @overload
    def get(self, name: str) -> T: ...

    @overload
    def get(self, name: str, default: D) -> T | D: ...

    def get(self, name: str, default: Any = _REQUIRED) -> Any:
        """The entry registered as `name`; an unknown name is an `OnnxAttrError` that names the
        closest registered one and lists them all (with a `default`, as ``Mapping.get``: that)."""
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            if default is not _REQUIRED:
                return default
            raise self.unknown(name) from None

    def unknown(self, name: object, available: Sequence[str] | None = None) -> OnnxAttrError:
        """The one error for a name this registry does not hold (``available``: the names that
        apply where it was asked for, e.g. the estimators a space has data for; default: all)."""
        names = self.list() if available is None else list(available)
        close = difflib.get_close_matches(str(name), names, n=1)
        hint = f" did you mean {close[0]!r}?" if close else ""
        return OnnxAttrError(
            f"unknown {self.kind} {name!r};{hint} available: {', '.join(names) or 'none'}"
        )

    def __getitem__(self, name: str) -> T:
        return self._entries[name]

    def __setitem__(self, name: str, entry: T) -> None:
        self._entries[name] = entry

    def __delitem__(self, name: str) -> None:
        del self._entries[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._entries)})"
