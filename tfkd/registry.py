"""A named registry of builders, shared by models and losses (timm's `@register_model` idea)."""

from collections.abc import Callable
from typing import Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; a duplicate name is an error, an unknown one lists the choices.

    Args:
        kind: what the registry holds, used in error messages ("model", "loss").
    """

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator registering an object under `name`."""

        def add(entry: T) -> T:
            if name in self._entries:
                raise ValueError(
                    f"A {self.kind} named '{name}' is already registered "
                    f"({self._entries[name]!r}). Choose another name."
                )
            self._entries[name] = entry
            return entry

        return add

    def get(self, name: str) -> T:
        """The object registered under `name`; `ValueError` listing the names otherwise."""
        if name not in self._entries:
            raise ValueError(f"Unknown {self.kind} '{name}'. Available: {self.names()}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
