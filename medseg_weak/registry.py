"""Name -> object registries, so that configs name things (``method: agr_sum``) instead of import paths."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

from medseg_weak.errors import RegistryError

T = TypeVar("T")


class Registry(Generic[T]):
    """A named table of implementations with one source of truth and helpful lookup errors.

    >>> rules = Registry[Callable]("gradient rule")
    >>> @rules.register("erm")
    ... def erm(grads): ...
    >>> rules.get("erm") is erm
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} '{name}' is already registered")
            self._items[name] = obj
            return obj

        return decorator

    def get(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            close = difflib.get_close_matches(name, self._items, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise RegistryError(
                f"unknown {self.kind} '{name}'.{hint} Valid: {', '.join(self.names()) or '(none registered)'}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self._items)
