"""atalaia detectors: pure NumPy/SciPy kernels behind one protocol.

No module here reads a file, a clock or the network.
"""

from __future__ import annotations

from .base import Context, Detector, Finding, Kind, Param, Status
from .errors import (
    AtalaiaError,
    ConfigError,
    LabelCardinalityError,
    ParameterError,
    SourceError,
    SourceTimeout,
)
from .profile import CategoricalCounts, CategoricalReference, NumericCounts, NumericReference, Profile
from .registry import Registry

__all__ = [
    "AtalaiaError", "CategoricalCounts", "CategoricalReference", "ConfigError", "Context", "Detector",
    "Finding", "Kind", "LabelCardinalityError", "NumericCounts", "NumericReference", "Param",
    "ParameterError", "Profile", "Registry", "SourceError", "SourceTimeout", "Status",
]
