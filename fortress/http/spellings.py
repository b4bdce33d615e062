"""Header names looked up as peers spell them, without a lower-cased copy of each name."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")
MAX_NAMES = 512  # the most spellings a table holds, learnt ones included
MAX_LEARNT = 64  # bytes: a longer name is lower-cased on every lookup, never kept


class Spellings(dict[bytes, T], Generic[T]):
    """What `kinds` (lower-case name -> answer; `default` for any other name) says of a header name, under
    the spellings peers send: lower case and Title-Case ("Content-Length", as nginx and Go send it) from the
    start, with the `usual` names; any other spelling is lower-cased on its first lookup and kept, up to a
    bound, so that names a peer makes up cannot grow the table. A lookup is one subscript."""

    __slots__ = ("default", "kinds")

    def __init__(self, kinds: Mapping[bytes, T], default: T, usual: Iterable[bytes] = ()) -> None:
        self.kinds = kinds
        self.default = default
        names = {**kinds, **dict.fromkeys(usual, default)}
        super().__init__((spelled, kind) for name, kind in names.items() for spelled in (name, name.title()))

    def __missing__(self, name: bytes) -> T:
        kind = self.kinds.get(name.lower(), self.default)
        if len(self) < MAX_NAMES and len(name) <= MAX_LEARNT:
            self[name] = kind
        return kind
