"""From statistics to statuses: effect size, significance, multiple testing.

A finding *breaches* only when its effect size passes the threshold **and**,
when it carries a p-value, that p-value survives the family's correction:
at ten million rows every tiny shift is "significant", at a hundred rows
big shifts are noise.

Benjamini–Hochberg adjusted p-values (step-up, monotone):

.. math::  \\tilde p_{(i)} = \\min_{j \\ge i} \\min\\left(1, \\frac{m}{j} p_{(j)}\\right)

Bonferroni: :math:`\\tilde p_i = \\min(1, m p_i)`.

>>> import numpy as np
>>> adjust_p_values(np.array([0.01, 0.04, 0.03, 0.5]), method="bh").round(3).tolist()
[0.04, 0.053, 0.053, 0.5]
>>> classify(0.3, p_adjusted=0.001, warn=0.1, alert=0.25, alpha=0.05)
('alert', 0.25)
>>> classify(0.3, p_adjusted=0.2, warn=0.1, alert=0.25, alpha=0.05)
('ok', 0.1)
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from .base import Status

__all__ = ["adjust_p_values", "classify", "Correction"]

Correction = Literal["bh", "bonferroni", "none"]


def adjust_p_values(p: np.ndarray, *, method: Correction = "bh") -> np.ndarray:
    """Adjust a family of p-values; NaN entries stay NaN and do not count in the family."""
    p = np.asarray(p, dtype=np.float64)
    out = np.full_like(p, np.nan)
    ok = np.isfinite(p)
    m = int(ok.sum())
    if m == 0:
        return out
    q = p[ok]
    if method == "none":
        adj = q
    elif method == "bonferroni":
        adj = np.minimum(1.0, q * m)
    elif method == "bh":
        order = np.argsort(q)
        ranked = q[order] * m / np.arange(1, m + 1)
        ranked = np.minimum.accumulate(ranked[::-1])[::-1]
        adj = np.empty(m)
        adj[order] = np.minimum(1.0, ranked)
    else:
        raise ValueError(f"method must be one of 'bh', 'bonferroni', 'none', got {method!r}")
    out[ok] = adj
    return out


def classify(value: float, *, p_adjusted: float | None, warn: float, alert: float,
             alpha: float | None, higher_is_worse: bool = True) -> tuple[Status, float]:
    """Status of one finding and the threshold it is compared with.

    The threshold reported is the alert threshold when the finding alerts,
    else the warn threshold.  A NaN value has no verdict: ``insufficient_data``.

    >>> classify(float("nan"), p_adjusted=0.001, warn=0.1, alert=0.25, alpha=0.05)
    ('insufficient_data', 0.1)
    """
    if np.isnan(value):
        return "insufficient_data", warn
    significant = p_adjusted is None or alpha is None or (np.isfinite(p_adjusted) and p_adjusted < alpha)
    if higher_is_worse:
        past_alert, past_warn = value >= alert, value >= warn
    else:
        past_alert, past_warn = value <= alert, value <= warn
    if significant and past_alert:
        return "alert", alert
    if significant and past_warn:
        return "warn", warn
    return "ok", warn
