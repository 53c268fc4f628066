"""Which columns of a model's data play which role (no Arrow: the configuration checks use it too)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Columns"]


@dataclass(frozen=True, kw_only=True)
class Columns:
    """Which columns of a batch play which role."""

    numeric: Sequence[str]
    categorical: Sequence[str]
    sensitive: Sequence[str] = ()
    timestamp: str | None = None
    score: str | None = None
    prediction: str | None = None
    #: the prediction is a class (classification) rather than a number (regression)
    prediction_is_class: bool = True
    label: str | None = None

    @property
    def numeric_targets(self) -> list[str]:
        extra = [self.score] if self.score else []
        if self.prediction and not self.prediction_is_class:
            extra.append(self.prediction)
        return list(dict.fromkeys([*self.numeric, *extra]))

    @property
    def categorical_targets(self) -> list[str]:
        extra = [self.prediction] if self.prediction and self.prediction_is_class else []
        return list(dict.fromkeys([*self.categorical, *extra]))

    def roles(self) -> dict[str, str]:
        roles = {c: "feature" for c in [*self.numeric, *self.categorical]}
        if self.score:
            roles[self.score] = "score"
        if self.prediction:
            roles[self.prediction] = "prediction"
        return roles
