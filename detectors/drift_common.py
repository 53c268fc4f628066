"""Shared machinery of the per-column drift detectors.

Each subclass supplies one pure kernel, :meth:`ColumnDrift.statistic`, that
turns a reference summary and the current counts of one column into a
:class:`Stat`; this base applies ``min_rows``, the multiple-testing
correction across the detector's columns and the thresholds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from .base import Context, Detector, Finding, Param, number, one_of, optional, str_list
from .decision import adjust_p_values, classify
from .profile import CategoricalReference, NumericCounts, NumericReference, Profile

__all__ = ["Stat", "ColumnDrift", "drift_params", "iso", "join_notes", "NOT_FINITE", "some_names"]

#: the note of a finding whose statistic came out NaN: ``insufficient_data``, never a silent ``ok``
NOT_FINITE = "statistic not finite (values near the limits of float64?): no verdict"


@dataclass(frozen=True, kw_only=True)
class Stat:
    """A kernel's result for one column."""

    value: float
    p_value: float | None = None
    note: str | None = None


def drift_params(*, warn: float, alert: float, test: bool, min_rows: int = 100) -> dict[str, Param]:
    """The parameters every column drift detector takes (``alpha``/``correction`` for tests)."""
    params = {
        "features": Param(None, str_list, "columns to score (default: every column the detector applies to)"),
        "warn": Param(warn, number(gt=0), "effect size at which the status becomes warn"),
        "alert": Param(alert, number(gt=0), "effect size at which the status becomes alert"),
        "min_rows": Param(min_rows, number(ge=1, integer=True), "fewer rows on either side: insufficient_data"),
    }
    if test:
        params["alpha"] = Param(0.05, optional(number(gt=0, lt=1)), "family-wise significance level")
        params["correction"] = Param("bh", one_of("bh", "bonferroni", "none"), "multiple-testing correction")
    return params


def iso(ts: Any) -> str:
    """ISO-8601 UTC with a ``Z`` suffix."""
    return ts.isoformat().replace("+00:00", "Z")


#: characters of one category name a note shows at most (a name is data: it may be a 200 kB blob)
NAME_CHARS = 40


def some_names(names: list[str], *, at_most: int) -> str:
    """The first ``at_most`` of ``names`` for a note, each escaped (newlines, quotes) and cut to
    :data:`NAME_CHARS` characters, with "…" when more follow.

    >>> print(some_names(["a", "b\\nc", "x" * 50, "d"], at_most=3))
    a, b\\nc, xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…, …
    """
    def one(name: str) -> str:
        text = repr(name)[1:-1]
        return text if len(text) <= NAME_CHARS else text[:NAME_CHARS - 1] + "…"

    return ", ".join(one(n) for n in names[:at_most]) + (", …" if len(names) > at_most else "")


def join_notes(*notes: str | None) -> str | None:
    """The notes that are set, joined with "; " (``None`` when there are none).

    >>> join_notes("a", None, "b"), join_notes(None)
    ('a; b', None)
    """
    return "; ".join(n for n in notes if n) or None


def _n_of(summary: Any) -> int:
    """Values a reference summary or current counts hold (an empty or all-null reference holds 0)."""
    if isinstance(summary, NumericReference | CategoricalReference):
        return summary.n
    if isinstance(summary, NumericCounts):
        return summary.n_finite
    return sum(summary.counts.values())


class ColumnDrift(Detector):
    """A drift detector scoring each applicable column on its own."""

    kind: ClassVar = "drift"
    statistic_name: ClassVar[str]

    def statistic(self, reference: Any, current: Any, *, smallest_p: float = 1.0) -> Stat:  # pragma: no cover
        """The column's statistic and p-value.  ``smallest_p``: the p-value a lone drifted column must be able
        to reach to pass the correction (``alpha`` over the detector's columns); a Monte Carlo p-value draws
        enough to get there, an analytic one ignores it."""
        raise NotImplementedError

    def current_n(self, current: Any) -> int:
        if isinstance(current, NumericCounts):
            return current.n_finite
        return sum(current.counts.values())

    def excluded_note(self, current: Any) -> str | None:
        if isinstance(current, NumericCounts):
            if current.n_missing:
                return (f"excluded {current.n_missing} of {current.n_total} values "
                        f"(null {current.n_null}, NaN {current.n_nan}, inf {current.n_posinf + current.n_neginf})")
        elif current.n_null:
            return f"excluded {current.n_null} null values"
        return None

    def score(self, summary: Profile, current: Profile, *, context: Context) -> list[Finding]:
        cols = self.targets(c for c in summary.columns_for(self.applies_to) if c in current.columns_for(self.applies_to))
        alpha = getattr(self, "alpha", None)
        smallest_p = (alpha if alpha else 1.0) / max(1, len(cols))
        rows: list[dict[str, Any]] = []
        for col in cols:
            ref = summary.numeric.get(col) or summary.categorical.get(col)
            cur = current.numeric.get(col) or current.categorical.get(col)
            n_ref, n_cur = _n_of(ref), self.current_n(cur)
            row: dict[str, Any] = {"target": col, "n_reference": n_ref, "n_current": n_cur,
                                   "note": self.excluded_note(cur)}
            if n_ref < self.min_rows or n_cur < self.min_rows:
                short = f"{n_ref} reference and {n_cur} window values, fewer than min_rows {self.min_rows}"
                row |= {"value": None, "p_value": None, "insufficient": True, "note": join_notes(row["note"], short)}
            else:
                stat = self.statistic(ref, cur, smallest_p=smallest_p)
                note = "; ".join(x for x in (row["note"], stat.note) if x) or None
                if stat.value is None or np.isnan(stat.value):  # e.g. spreads past float64's range: no verdict
                    note = "; ".join(x for x in (note, NOT_FINITE) if x)
                    row |= {"value": None, "p_value": None, "note": note, "insufficient": True}
                else:
                    row |= {"value": stat.value, "p_value": stat.p_value, "note": note, "insufficient": False}
            rows.append(row)
        p = np.array([np.nan if r["p_value"] is None else r["p_value"] for r in rows])
        p_adj = adjust_p_values(p, method=getattr(self, "correction", "bh"))
        findings = []
        window_start, window_end = iso(context.window_start), iso(context.window_end)
        for r, padj in zip(rows, p_adj, strict=True):
            if r["insufficient"]:
                status, threshold = "insufficient_data", self.warn
            else:
                status, threshold = classify(r["value"], p_adjusted=None if np.isnan(padj) else float(padj),
                                             warn=self.warn, alert=self.alert, alpha=alpha)
            findings.append(Finding(
                model=context.model, detector=self.name, kind=self.kind, target=r["target"],
                statistic=self.statistic_name, value=r["value"], threshold=threshold, p_value=r["p_value"],
                status=status, n_reference=r["n_reference"], n_current=r["n_current"],
                window_start=window_start, window_end=window_end, note=r["note"]))
        return findings
