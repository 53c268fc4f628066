"""The detector registry: entry-point group ``atalaia.detectors``.

Built-in detectors are registered through the very entry-point group a
third-party plugin uses (see ``pyproject.toml``); classes are imported
lazily, the first time a name is asked for.

>>> reg = Registry()
>>> "psi" in reg.names()
True
>>> reg.create("ks", alpha=0.01).alpha
0.01
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from .base import Detector
from .errors import ParameterError

__all__ = ["Registry", "GROUP", "UnknownDetector"]

GROUP = "atalaia.detectors"


class UnknownDetector(ParameterError):
    """No detector is registered under the requested name."""

    def __init__(self, name: str, available: list[str]) -> None:
        super().__init__(name, {"type": f"must be one of {', '.join(available)}, got {name!r}"})
        self.available = available


class Registry:
    """Maps detector names to classes; ``extra`` adds or overrides entries (tests, embedding)."""

    def __init__(self, *, group: str = GROUP, extra: Mapping[str, type[Detector]] | None = None) -> None:
        self._group = group
        self._points: dict[str, EntryPoint] = {ep.name: ep for ep in entry_points(group=group)}
        self._loaded: dict[str, type[Detector]] = dict(extra or {})

    def names(self) -> list[str]:
        return sorted(set(self._points) | set(self._loaded))

    def get(self, name: str) -> type[Detector]:
        if name in self._loaded:
            return self._loaded[name]
        ep = self._points.get(name)
        if ep is None:
            raise UnknownDetector(name, self.names())
        cls = ep.load()
        if not (isinstance(cls, type) and issubclass(cls, Detector)):
            raise TypeError(f"entry point {self._group}:{name} must name a Detector subclass, got {cls!r}")
        self._loaded[name] = cls
        return cls

    def create(self, name: str, **params: Any) -> Detector:
        return self.get(name)(**params)

    def problems(self, name: str, params: Mapping[str, Any]) -> dict[str, str]:
        """Every problem with a detector declaration (``type`` included), without raising."""
        try:
            cls = self.get(name)
        except UnknownDetector as exc:
            return exc.problems
        return cls.parameter_problems(params)
