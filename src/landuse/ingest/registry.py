"""Adapter registries: source classes registered under the name used in config (``adapter:``)."""

from __future__ import annotations

from typing import Generic, Iterator, TypeVar

from landuse.ingest.errors import IngestError

T = TypeVar("T")


class AdapterRegistry(Generic[T]):
    """Name → adapter class for one role (trips, POIs); unknown names fail listing the known ones."""

    def __init__(self, role: str) -> None:
        self.role = role
        self._classes: dict[str, type[T]] = {}

    def register(self, cls: type[T]) -> type[T]:
        """Class decorator: make ``cls`` available under ``cls.adapter``."""
        self._classes[cls.adapter] = cls  # type: ignore[attr-defined]
        return cls

    def create(self, adapter: str) -> T:
        """A new instance of the adapter registered as ``adapter``."""
        if adapter not in self._classes:
            raise IngestError(f"unknown {self.role} adapter {adapter!r} (known: {', '.join(sorted(self._classes))})")
        return self._classes[adapter]()

    def __contains__(self, adapter: object) -> bool:
        return adapter in self._classes

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._classes))

    def __len__(self) -> int:
        return len(self._classes)
