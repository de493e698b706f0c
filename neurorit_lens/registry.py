"""Named choices with their implementation and a one-line description.

The definitions of I, the training methods, the deactivation modes and the ablation modes
are each a :class:`Registry`; the module that implements a choice registers it next to its
code. The config's ``Literal`` types (the command line's choices) list the same names, which
a test checks, and the docs print :meth:`Registry.table`.

>>> MODES = Registry("mode")
>>> @MODES.register("double", "multiply by 2")
... def double(x):
...     return 2 * x
>>> MODES.get("double")(3), MODES.names()
(6, ('double',))
>>> MODES.get("triple")
Traceback (most recent call last):
...
ValueError: unknown mode 'triple'; choose from double
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

__all__ = ["Entry", "Registry"]


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered choice."""

    name: str
    impl: T
    description: str


class Registry(Generic[T]):
    """An ordered ``name -> (implementation, description)`` table of one kind of choice."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, description: str, impl: T | None = None, *,
                 replace: bool = False) -> Callable[[T], T]:
        """Register ``impl`` under ``name`` (or, without ``impl``, return a decorator that does).

        ``ValueError`` for a name already registered unless ``replace``.
        """
        if not description or "\n" in description:
            raise ValueError(f"{self.kind} {name!r}: the description must be one line")

        def add(obj: T) -> T:
            if name in self._entries and not replace:
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = Entry(name, obj, description)
            return obj

        if impl is not None:
            add(impl)
        return add

    def unregister(self, name: str) -> None:
        self._entries.pop(name, None)

    def entry(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise ValueError(f"unknown {self.kind} {name!r}; choose from {', '.join(self._entries)}") from None

    def get(self, name: str) -> T:
        """The implementation of ``name``; ``ValueError`` listing the names for an unknown one."""
        return self.entry(name).impl

    def names(self) -> tuple[str, ...]:
        return tuple(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[Entry[T]]:
        return iter(list(self._entries.values()))

    def __len__(self) -> int:
        return len(self._entries)

    def table(self) -> str:
        """A Markdown table of the names and their descriptions."""
        rows = [f"| `{e.name}` | {e.description} |" for e in self]
        return "\n".join([f"| {self.kind} | what it does |", "|---|---|", *rows])
