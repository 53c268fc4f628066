"""Data quality: the values the distribution statistics exclude, made visible.

NaN, nulls and infinities never enter a histogram (see
:mod:`detectors.profile`), and a category the reference never showed has
no reference probability.  ``data_quality`` reports them per column, each
as a rate of the window compared with the reference:

================== ========================================= ==============================
statistic          rate (value)                              no-change baseline
================== ========================================= ==============================
missing_rate       (null + NaN) / rows                       the reference's rate
inf_rate           (+inf + -inf) / rows (numeric)            the reference's rate
out_of_range_rate  finite values outside [ref min, ref max]  2 / (n_ref + 1)
unseen_rate        non-null values of unseen categories      Good–Turing (N1 + 1) / (n_ref + 1)
================== ========================================= ==============================

A finding breaches when the rate is at least *baseline + warn* (or
*+ alert*) **and** a one-sided test says it rose, after Benjamini–Hochberg
across all of the detector's findings in the run:

* missing and inf: the reference is a sample too, so the exact conditional
  test of two rates — given the k events of both samples together, the
  window's share is Binomial(k, m/(n+m)) when nothing changed;
* out of range: for exchangeable continuous data a new value falls outside
  the reference's range with probability 2/(n+1) exactly (less with ties),
  so the window's count is tested against Binomial(m, 2/(n+1));
* unseen: the chance that a new value shows a category the reference
  lacks is estimated by Good–Turing, (singletons + 1)/(n + 1), and the
  count tested against that binomial.

The reported ``threshold`` is the effective one (baseline + margin).
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
from scipy import special

from .base import Context, Detector, Finding, Param, number, one_of, optional, str_list
from .decision import adjust_p_values, classify
from .drift_common import iso
from .profile import CategoricalCounts, CategoricalReference, NumericCounts, NumericReference, Profile

__all__ = ["DataQuality", "rate_increase_p", "binomial_excess_p"]


def rate_increase_p(k_current: int, m: int, k_reference: int, n: int) -> float:
    """One-sided p-value that the window's event rate exceeds the reference's (exact conditional test).

    >>> round(rate_increase_p(30, 1000, 10, 1000), 5)
    0.00111
    >>> rate_increase_p(0, 1000, 10, 1000)
    1.0
    """
    k = k_current + k_reference
    if k == 0 or k_current == 0 or m == 0:
        return 1.0
    return float(special.bdtrc(k_current - 1, k, m / (n + m)))


def binomial_excess_p(k: int, m: int, p0: float) -> float:
    """One-sided p-value of ``k`` events in ``m`` trials when each has probability ``p0``.

    >>> round(binomial_excess_p(10, 1000, 0.002), 5)
    5e-05
    """
    if k == 0 or m == 0:
        return 1.0
    return float(special.bdtrc(k - 1, m, min(max(p0, 0.0), 1.0)))


def _pct(x: float) -> str:
    return f"{100 * x:.3g} %"


class DataQuality(Detector):
    """Per-column missing rate, NaN/inf rate, share outside the reference range and unseen-category rate.

    See the module docstring for the statistics and their tests.  One
    finding per column and statistic (numeric: ``missing_rate``,
    ``inf_rate``, ``out_of_range_rate``; categorical: ``missing_rate``,
    ``unseen_rate``); the value is the window's rate.

    Defaults: ``warn`` 0.01 and ``alert`` 0.05 — the rate must exceed its
    no-change baseline by 1 (5) percentage points; ``alpha`` 0.05 after
    Benjamini–Hochberg over all the detector's findings of the run;
    ``min_rows`` 100 (rows for the missing and inf rates, finite values for
    the range, non-null values for unseen categories).  The reference's NaN
    and inf counts come from its profile.

    >>> from datetime import datetime, timezone
    >>> rng = np.random.default_rng(0)
    >>> ref = NumericReference.from_values(rng.normal(size=5000))
    >>> x = rng.normal(size=2000); x[:100] = np.nan; x[100:140] = np.inf; x[140:200] += 10
    >>> t = datetime(2026, 1, 1, tzinfo=timezone.utc)
    >>> fs = DataQuality().score(Profile(n_rows=5000, numeric={"x": ref}),
    ...                          Profile(n_rows=2000, numeric={"x": NumericCounts.of(x, ref)}),
    ...                          context=Context(model="m", window_start=t, window_end=t))
    >>> [(f.statistic, round(f.value, 3), f.status) for f in fs]
    [('missing_rate', 0.05, 'alert'), ('inf_rate', 0.02, 'warn'), ('out_of_range_rate', 0.032, 'warn')]
    """

    name: ClassVar[str] = "data_quality"
    kind: ClassVar = "quality"
    applies_to = frozenset({"numeric", "categorical"})
    params = {
        "features": Param(None, str_list, "columns to check (default: all)"),
        "warn": Param(0.01, number(gt=0, le=1), "rate above the no-change baseline at which the status becomes warn"),
        "alert": Param(0.05, number(gt=0, le=1), "rate above the baseline at which the status becomes alert"),
        "min_rows": Param(100, number(ge=1, integer=True), "fewer values on either side: insufficient_data"),
        "alpha": Param(0.05, optional(number(gt=0, lt=1)), "family-wise significance level"),
        "correction": Param("bh", one_of("bh", "bonferroni", "none"), "multiple-testing correction"),
    }

    # -- scoring --------------------------------------------------------------
    def _numeric_rows(self, col: str, ref: NumericReference, cur: NumericCounts) -> list[dict[str, Any]]:
        ref_total = ref.n + ref.n_missing
        ref_nan, ref_inf = ref.n_nan, ref.n_inf
        m_total = cur.n_total
        k_missing, k_inf = cur.n_null + cur.n_nan, cur.n_posinf + cur.n_neginf
        rows = [
            self._rate_row(col, "missing_rate", k_missing, m_total, ref_nan, ref_total,
                           f"null {cur.n_null}, NaN {cur.n_nan} of {m_total} rows"),
            self._rate_row(col, "inf_rate", k_inf, m_total, ref_inf, ref_total,
                           f"+inf {cur.n_posinf}, -inf {cur.n_neginf} of {m_total} rows"),
        ]
        m = cur.n_finite
        k_out = int(cur.counts[0] + cur.counts[-1]) if ref.n else 0
        p0 = 2.0 / (ref.n + 1)
        row = {"target": col, "statistic": "out_of_range_rate", "n_reference": ref.n, "n_current": m,
               "baseline": p0}
        if ref.n < self.min_rows or m < self.min_rows:
            row |= {"value": None, "p": None,
                    "note": "no finite reference values" if ref.n == 0 else None}
        else:
            row |= {"value": k_out / m, "p": binomial_excess_p(k_out, m, p0),
                    "note": f"below {int(cur.counts[0])}, above {int(cur.counts[-1])} "
                            f"the reference range [{ref.minimum:.6g}, {ref.maximum:.6g}]"}
        rows.append(row)
        return rows

    def _categorical_rows(self, col: str, ref: CategoricalReference, cur: CategoricalCounts) -> list[dict[str, Any]]:
        ref_total = ref.n + ref.n_missing
        m_total = cur.n_total
        rows = [self._rate_row(col, "missing_rate", cur.n_null, m_total, ref.n_missing, ref_total,
                               f"null {cur.n_null} of {m_total} rows")]
        _, unseen, names = cur.aligned(ref)
        m = m_total - cur.n_null
        singletons = int(np.count_nonzero(ref.counts == 1))
        p0 = (singletons + 1) / (ref.n + 1)
        row = {"target": col, "statistic": "unseen_rate", "n_reference": ref.n, "n_current": m, "baseline": p0}
        if ref.n < self.min_rows or m < self.min_rows:
            row |= {"value": None, "p": None, "note": None}
        else:
            shown = ", ".join(names[:5]) + (", …" if len(names) > 5 else "")
            row |= {"value": unseen / m, "p": binomial_excess_p(unseen, m, p0),
                    "note": f"{unseen} values in {len(names)} unseen categories" + (f" ({shown})" if names else "")}
        rows.append(row)
        return rows

    def _rate_row(self, col: str, statistic: str, k: int, m: int, k_ref: int, n: int, note: str) -> dict[str, Any]:
        baseline = k_ref / n if n else 0.0
        row = {"target": col, "statistic": statistic, "n_reference": n, "n_current": m, "baseline": baseline}
        if n < self.min_rows or m < self.min_rows:
            return row | {"value": None, "p": None, "note": None}
        return row | {"value": k / m, "p": rate_increase_p(k, m, k_ref, n),
                      "note": f"{note} (reference {_pct(baseline)})"}

    def score(self, summary: Profile, current: Profile, *, context: Context) -> list[Finding]:
        rows: list[dict[str, Any]] = []
        numeric = [c for c in summary.numeric if c in current.numeric]
        categorical = [c for c in summary.categorical if c in current.categorical]
        chosen = set(self.targets([*numeric, *categorical]))
        for col in numeric:
            if col in chosen:
                rows += self._numeric_rows(col, summary.numeric[col], current.numeric[col])
        for col in categorical:
            if col in chosen:
                rows += self._categorical_rows(col, summary.categorical[col], current.categorical[col])
        p = np.array([np.nan if r["p"] is None else r["p"] for r in rows])
        p_adj = adjust_p_values(p, method=self.correction)
        findings = []
        for r, padj in zip(rows, p_adj, strict=True):
            base = r["baseline"]
            if r["value"] is None:
                status, threshold = "insufficient_data", base + self.warn
            else:
                status, _ = classify(r["value"] - base, p_adjusted=None if np.isnan(padj) else float(padj),
                                     warn=self.warn, alert=self.alert, alpha=self.alpha)
                threshold = base + (self.alert if status == "alert" else self.warn)
            findings.append(Finding(
                model=context.model, detector=self.name, kind=self.kind, target=r["target"],
                statistic=r["statistic"], value=r["value"], threshold=float(threshold), p_value=r["p"],
                status=status, n_reference=int(r["n_reference"]), n_current=int(r["n_current"]),
                window_start=iso(context.window_start), window_end=iso(context.window_end), note=r["note"]))
        return findings
