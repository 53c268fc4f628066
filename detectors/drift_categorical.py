"""Drift of categorical columns: contingency tests and distances over categories.

The reference is a *sample*, not the truth: a change is tested on the
2 x k reference-versus-current contingency table, so both samples' noise is
in the null distribution.  (Treating the reference proportions as exact
expected values — a one-sample goodness-of-fit test — ignores the
reference's own sampling noise and, with equal sample sizes, flags about
half of no-change windows at a nominal 5 %.)

Distances (:func:`binned_pair`)
    Columns are the reference categories (most frequent first) plus one
    column ``<unseen>`` that pools every category the reference never
    showed.  Null values are excluded and stated in the finding's note;
    their rate is scored by ``data_quality``.  For numeric columns the same
    helpers use the ``PSI_QUANTILE_BINS`` reference-quantile bins, so every
    distance here applies to numeric columns as well.

Tests (:func:`homogeneity_table`, :func:`merge_sparse`)
    The test table has one column per category that *either* sample shows —
    an unseen category is its own column, not part of a pooled
    ``<unseen>``: a column defined by "absent from the reference" has a
    reference count of 0 by construction, and with a long tail of rare
    categories a no-change window always shows some, so such a column alone
    would flag most windows (measured: 14 % of runs for the G-test).  A test
    needs expected counts of at least ``MIN_EXPECTED`` (5, Cochran's rule) in
    every cell: columns whose smaller expected count
    ``min(n, m) * pooled_share`` is below it are pooled into one ``<other>``
    column; if that column is still sparse it is merged into the smallest
    remaining column.  Pooling depends only on the two samples' *pooled*
    counts, which the contingency test conditions on, so it keeps the
    test's level.  When one column would be all that is left (a flag, or
    one dominant category and rare ones: a category at 1 % of the
    reference that takes 80 % of a 150-row window is such a sparse column),
    the sparse ones stay pooled as ``<other>`` against it and the 2 x 2
    table is tested with Fisher's exact test (:func:`fisher_exact_p`),
    valid at any expected count; the statistic is still computed on that
    table.  A table of one column (every category sparse) has no test
    (p = 1).  A genuinely new category with enough rows stays a column of
    its own and is found.

    The price: a change *among* categories each too rare to test — a column
    of ids or free text whose values all occur a handful of times, where the
    window's values are all new — pools into ``<other>`` and leaves no test,
    so every detector here says ``ok`` at p = 1 although the distances show
    it (total variation 1.0).  ``data_quality``'s ``unseen_rate`` is the
    detector for that: it tests the share of values of unseen categories
    against the Good–Turing rate the reference's singletons predict, and
    alerts on it.  Such columns are better monitored there than here.

Example
-------
>>> import numpy as np
>>> from detectors.profile import CategoricalCounts, CategoricalReference
>>> ref = CategoricalReference.from_counts(CategoricalCounts(counts={"a": 600, "b": 300, "c": 100}))
>>> cur = CategoricalCounts(counts={"a": 450, "b": 450, "c": 80, "zz": 20})
>>> p, q, labels = binned_pair(ref, cur)
>>> labels, p.tolist(), q.tolist()
(['a', 'b', 'c', '<unseen>'], [600, 300, 100, 0], [450, 450, 80, 20])
>>> s = Chi2().statistic(ref, cur)
>>> round(s.value, 3), s.p_value < 1e-10
(0.384, True)
"""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

import numpy as np
from scipy import special

from .drift_common import ColumnDrift, Stat, drift_params, join_notes, some_names
from .profile import CategoricalCounts, CategoricalReference, NumericReference, per_pair

__all__ = [
    "MIN_EXPECTED",
    "UNSEEN",
    "OTHER",
    "binned_pair",
    "homogeneity_table",
    "merge_sparse",
    "contingency_test",
    "Contingency",
    "fisher_exact_p",
    "homogeneity_test",
    "shared_binned_pair",
    "cohens_w",
    "total_variation",
    "Chi2",
    "GTest",
    "TotalVariation",
    "BinnedDistance",
]

#: Cochran's rule: every expected cell count of a contingency test at least this
MIN_EXPECTED = 5.0
UNSEEN = "<unseen>"
OTHER = "<other>"


def binned_pair(reference: Any, current: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Reference and current counts over common bins, with their labels.

    Categorical: the reference categories plus ``<unseen>`` (all categories
    the reference never showed).  Numeric: the reference-quantile PSI bins
    (values below the reference minimum join the first bin, above its
    maximum the last), labelled ``q0 … q9``.
    """
    if isinstance(reference, CategoricalReference):
        aligned, unseen, _ = current.aligned(reference)
        p = np.concatenate([reference.counts, [0]]).astype(np.int64)
        q = np.concatenate([aligned, [unseen]]).astype(np.int64)
        return p, q, [*reference.categories, UNSEEN]
    if isinstance(reference, NumericReference):
        p = np.add.reduceat(reference.counts, reference.psi_cuts)
        q = np.add.reduceat(current.counts, reference.psi_cuts)
        return p, q, [f"q{i}" for i in range(p.size)]
    raise TypeError(f"reference must be a NumericReference or CategoricalReference, got {type(reference).__name__}")


def homogeneity_table(reference: Any, current: Any) -> tuple[np.ndarray, np.ndarray]:
    """Reference and current counts for a test: every category of either sample its own column.

    Numeric columns: the ten reference-quantile bins, as :func:`binned_pair`.

    >>> ref = CategoricalReference.from_counts(CategoricalCounts(counts={"a": 60, "b": 40}))
    >>> [c.tolist() for c in homogeneity_table(ref, CategoricalCounts(counts={"a": 50, "x": 3, "y": 1}))]
    [[60, 40, 0, 0], [50, 0, 3, 1]]
    """
    if isinstance(reference, CategoricalReference):
        aligned, _, names = current.aligned(reference)
        p = np.concatenate([reference.counts, np.zeros(len(names), np.int64)]).astype(np.int64)
        q = np.concatenate([aligned, np.array([current.counts[k] for k in names], dtype=np.int64)])
        return p, q
    p, q, _ = binned_pair(reference, current)
    return p, q


def merge_sparse(p: np.ndarray, q: np.ndarray, *, min_expected: float = MIN_EXPECTED
                 ) -> tuple[np.ndarray, np.ndarray, int]:
    """Pool sparse columns of the 2 x k table ``[p; q]``; returns the table and how many were pooled.

    Empty columns (no count on either side) are dropped.  A column is sparse
    when ``min(n, m) * (p_j + q_j) / (n + m) < min_expected``.  Sparse columns
    are pooled into one; if that one is still sparse it is folded into the
    smallest other column, unless that would leave one column: then the
    2 x 2 table is returned (see :func:`contingency_test`).

    >>> merge_sparse(np.array([500, 400, 3, 2]), np.array([450, 450, 1, 4]))
    (array([500, 400,   5]), array([450, 450,   5]), 2)
    >>> merge_sparse(np.array([4950, 50]), np.array([30, 120]))   # a rare category takes the window
    (array([4950,   50]), array([ 30, 120]), 1)
    """
    p = np.asarray(p, dtype=np.int64)
    q = np.asarray(q, dtype=np.int64)
    keep = (p + q) > 0
    p, q = p[keep], q[keep]
    n, m = int(p.sum()), int(q.sum())
    if n == 0 or m == 0 or p.size < 2:
        return p, q, 0
    expected = min(n, m) * (p + q) / (n + m)
    sparse = expected < min_expected
    n_sparse = int(sparse.sum())
    if n_sparse == 0:
        return p, q, 0
    po, qo = int(p[sparse].sum()), int(q[sparse].sum())
    p, q = p[~sparse], q[~sparse]
    # dense enough, all columns sparse, or one column left to fold <other> into (which would leave no
    # test: the 2 x 2 table is kept, for Fisher's exact test)
    if min(n, m) * (po + qo) / (n + m) >= min_expected or p.size <= 1:
        return np.append(p, po), np.append(q, qo), n_sparse
    j = int(np.argmin(p + q))  # still sparse: fold <other> into the smallest column
    p[j] += po
    q[j] += qo
    return p, q, n_sparse


class Contingency(NamedTuple):
    """A homogeneity test's result (:func:`contingency_test`)."""

    statistic: float
    p_value: float
    dof: int
    #: sparse columns pooled for the test
    pooled: int
    #: the p-value is Fisher's exact one (a 2 x 2 table with an expected count below ``MIN_EXPECTED``)
    exact: bool = False


def fisher_exact_p(table: np.ndarray) -> float:
    """Two-sided p-value of Fisher's exact test of a 2 x 2 table of counts, as
    ``scipy.stats.fisher_exact(table).pvalue``.

    Given both margins, the count in one cell is hypergeometric; the p-value
    is the probability of the tables no more probable than the observed one
    (within a relative 1e-7, as R's ``fisher.test``, so rounding cannot split
    tables of equal probability):

    .. math:: p = \\sum_{x:\\,P(x) \\le P(x_{obs})(1 + 10^{-7})} P(x), \\quad
              P(x) = \\binom{K}{x}\\binom{N-K}{r-x} \\Big/ \\binom{N}{r}

    with :math:`r` the smaller row total and :math:`K` the smaller column total,
    so the sum runs over at most ``min(margins) + 1`` tables.

    >>> round(fisher_exact_p(np.array([[4950, 50], [30, 120]])), 300) < 1e-100
    True
    >>> round(fisher_exact_p(np.array([[8, 2], [1, 5]])), 6)   # scipy.stats.fisher_exact: 0.034965
    0.034965
    """
    t = np.asarray(table, dtype=np.int64).reshape(2, 2)
    if t.sum(axis=1)[0] > t.sum(axis=1)[1]:
        t = t[::-1]
    if t.sum(axis=0)[0] > t.sum(axis=0)[1]:
        t = t[:, ::-1]
    big_n = int(t.sum())
    r, k = int(t[0].sum()), int(t[:, 0].sum())  # the smaller row and column totals
    if r == 0 or k == 0:
        return 1.0
    x = np.arange(max(0, r + k - big_n), min(r, k) + 1, dtype=np.float64)

    def lchoose(a: float, b: np.ndarray | float) -> np.ndarray:
        return special.gammaln(a + 1.0) - special.gammaln(np.asarray(b) + 1.0) - special.gammaln(a - np.asarray(b) + 1.0)

    log_p = lchoose(k, x) + lchoose(big_n - k, r - x) - float(lchoose(big_n, r))
    observed = log_p[int(t[0, 0]) - int(x[0])]
    return float(min(1.0, np.exp(log_p[log_p <= observed + 1e-7]).sum()))


def contingency_test(p: np.ndarray, q: np.ndarray, *, statistic: str = "pearson") -> Contingency:
    """Homogeneity test of the 2 x k table after :func:`merge_sparse`.

    Returns ``(statistic, p_value, dof, pooled, exact)``.  ``statistic`` is
    ``"pearson"`` (chi-square) or ``"log-likelihood"`` (G); no continuity
    correction.  The statistic equals ``scipy.stats.chi2_contingency(table,
    correction=False, lambda_=...)``'s on the merged table, and so does
    Pearson's p-value.

    G's p-value is taken at :math:`G/q` with Williams' (1976) correction for an
    :math:`r \\times c` table of total :math:`N`, row totals :math:`R_i` and column
    totals :math:`C_j`:

    .. math:: q = 1 + \\frac{(N \\sum_i 1/R_i - 1)(N \\sum_j 1/C_j - 1)}{6 N (r-1)(c-1)}

    G runs liberal against :math:`\\chi^2` with small expected counts, as a window
    just above ``min_rows`` has: over 3 000 seeded no-change runs of five
    categorical features at 120 rows, single tests rejected 5.35 % at a nominal
    5 % uncorrected and 5.07 % corrected.  :math:`q \\to 1` as the counts grow.

    >>> s, pv, dof, *_ = contingency_test(np.array([50, 50]), np.array([30, 70]))
    >>> round(s, 4), round(pv, 4), dof
    (8.3333, 0.0039, 1)
    >>> s, pv, dof, *_ = contingency_test(np.array([50, 50]), np.array([30, 70]), statistic="log-likelihood")
    >>> round(s, 4), round(pv, 4), round(float(special.chdtrc(dof, s)), 4)  # the p-value of G/q, q = 1.0079
    (8.4024, 0.0039, 0.0037)
    """
    a, b, pooled = merge_sparse(p, q)
    if a.size < 2 or a.sum() == 0 or b.sum() == 0:
        return Contingency(0.0, 1.0, 0, pooled)
    obs = np.stack([a, b]).astype(np.float64)
    n = obs.sum(axis=1, keepdims=True)
    col = obs.sum(axis=0, keepdims=True)
    exp = n * col / obs.sum()
    if statistic == "pearson":
        stat = float(np.sum((obs - exp) ** 2 / exp))
    elif statistic == "log-likelihood":
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(obs > 0, obs * np.log(obs / exp), 0.0)
        stat = float(2.0 * terms.sum())
    else:
        raise ValueError(f"statistic must be 'pearson' or 'log-likelihood', got {statistic!r}")
    dof = a.size - 1
    if a.size == 2 and float(exp.min()) < MIN_EXPECTED:  # left by merge_sparse for an exact test
        return Contingency(stat, fisher_exact_p(np.stack([a, b])), dof, pooled, exact=True)
    tested = stat if statistic == "pearson" else stat / williams_q(n.ravel(), col.ravel())
    return Contingency(stat, float(special.chdtrc(dof, tested)), dof, pooled)


def williams_q(rows: np.ndarray, cols: np.ndarray) -> float:
    """Williams' correction :math:`q` for G on a table with these (positive) row and column totals
    (see :func:`contingency_test`).

    >>> round(williams_q(np.array([100.0, 100.0]), np.array([80.0, 120.0])), 6)
    1.007917
    """
    big_n = float(rows.sum())
    dof = (rows.size - 1) * (cols.size - 1)
    return 1.0 + (big_n * float(np.sum(1.0 / rows)) - 1.0) * (big_n * float(np.sum(1.0 / cols)) - 1.0) / (
        6.0 * big_n * dof)


def homogeneity_test(reference: Any, current: Any, *, statistic: str = "pearson"
                     ) -> tuple[float, float, int, int, int, int, bool]:
    """:func:`contingency_test` of :func:`homogeneity_table`, once per (reference, current) pair and statistic.

    Returns ``(statistic, p_value, dof, pooled, n, m, exact)`` with ``n``, ``m`` the
    table's two row totals.  JS, KL, Hellinger, TV and chi2 all test the same
    table: it is built and tested once per run (:func:`~detectors.profile.per_pair`).

    >>> ref = CategoricalReference.from_counts(CategoricalCounts(counts={"a": 50, "b": 50}))
    >>> cur = CategoricalCounts(counts={"a": 30, "b": 70})
    >>> s, pv, dof, pooled, n, m, exact = homogeneity_test(ref, cur)
    >>> round(s, 4), round(pv, 4), dof, n, m   # as contingency_test([50, 50], [30, 70])
    (8.3333, 0.0039, 1, 100, 100)
    >>> homogeneity_test(ref, cur) is homogeneity_test(ref, cur)
    True
    """
    def run() -> tuple[float, float, int, int, int, int, bool]:
        p, q = homogeneity_table(reference, current)
        t = contingency_test(p, q, statistic=statistic)
        return t.statistic, t.p_value, t.dof, t.pooled, int(p.sum()), int(q.sum()), t.exact

    return per_pair(current, reference, f"homogeneity:{statistic}", run)


def shared_binned_pair(reference: Any, current: Any) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """:func:`binned_pair`, once per (reference, current) pair (the arrays returned are read-only).

    >>> ref = CategoricalReference.from_counts(CategoricalCounts(counts={"a": 60, "b": 40}))
    >>> p, q, labels = shared_binned_pair(ref, CategoricalCounts(counts={"a": 50, "z": 5}))
    >>> p.tolist(), q.tolist(), labels, p.flags.writeable
    ([60, 40, 0], [50, 0, 5], ['a', 'b', '<unseen>'], False)
    """
    return per_pair(current, reference, "binned_pair", lambda: binned_pair(reference, current))


def cohens_w(stat: float, n: int, m: int) -> float:
    """Effect size of a 2 x k homogeneity statistic: ``sqrt(stat * (n + m) / (n m))``.

    For Pearson's chi-square this is exactly
    :math:`\\sqrt{\\sum_j (p_j - q_j)^2 / \\bar\\pi_j}` (``p``, ``q`` the two
    samples' proportions, :math:`\\bar\\pi` the pooled ones): Cohen's *w*
    between the two samples, free of the sample sizes.
    """
    if n == 0 or m == 0:
        return 0.0
    return float(np.sqrt(max(stat, 0.0) * (n + m) / (n * m)))


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Total variation distance ``0.5 * sum |p_i - q_i|`` of two count vectors' proportions.

    >>> total_variation(np.array([50, 50]), np.array([25, 75]))
    0.25
    """
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def pooled_note(pooled: int, exact: bool = False) -> str | None:
    if not pooled:
        return None
    note = f"pooled {pooled} sparse columns (expected count < {MIN_EXPECTED:g}) for the test"
    return note + ": Fisher's exact test of them against the rest" if exact else note


def unseen_note(current: Any, reference: Any) -> str | None:
    if isinstance(reference, CategoricalReference):
        _, unseen, names = current.aligned(reference)
        if unseen:
            shown = some_names(names, at_most=3)
            return f"{unseen} values in {len(names)} unseen categories ({shown})"
    return None


class BinnedDistance(ColumnDrift):
    """A distance over the ten reference-quantile bins (numeric) or the categories (categorical).

    The p-value is the chi-square homogeneity test of the same bins (for
    categories: :func:`homogeneity_table`, every category its own column and
    sparse ones pooled, see the module docstring).  Subclasses supply
    :meth:`distance` of the two count vectors; PSI, JS, KL, Hellinger and TV.
    """

    applies_to = frozenset({"numeric", "categorical"})

    def distance(self, p: np.ndarray, q: np.ndarray) -> float:  # pragma: no cover - abstract
        raise NotImplementedError

    def statistic(self, reference: Any, current: Any, *, smallest_p: float = 1.0) -> Stat:
        p, q, _ = shared_binned_pair(reference, current)
        _, pv, _, pooled, _, _, exact = homogeneity_test(reference, current)
        return Stat(value=self.distance(p, q), p_value=pv,
                    note=join_notes(pooled_note(pooled, exact), unseen_note(current, reference)))


class _ContingencyDrift(ColumnDrift):
    """Shared body of the chi-square and G tests."""

    lambda_: ClassVar[str]

    def statistic(self, reference: CategoricalReference, current: CategoricalCounts, *,
                  smallest_p: float = 1.0) -> Stat:
        stat, pv, dof, pooled, n, m, exact = homogeneity_test(reference, current, statistic=self.lambda_)
        return Stat(value=cohens_w(stat, n, m), p_value=pv,
                    note=join_notes(f"{self.lambda_} statistic {stat:.4g}, dof {dof}", pooled_note(pooled, exact),
                                    unseen_note(current, reference)))


class Chi2(_ContingencyDrift):
    """Pearson chi-square test of homogeneity on the reference-vs-current table.

    Statistic :math:`X^2 = \\sum_{ij} (O_{ij} - E_{ij})^2 / E_{ij}` on the
    2 x k table of :func:`homogeneity_table` (every category of either sample,
    sparse columns pooled by their pooled counts, see the module
    docstring), :math:`\\chi^2_{k-1}` p-value, no continuity correction.

    The finding's value is the effect size Cohen's *w* between the samples,
    :math:`w = \\sqrt{X^2 (n+m)/(nm)} = \\sqrt{\\sum_j (p_j - q_j)^2/\\bar\\pi_j}`,
    which does not grow with the sample size.

    Defaults: ``warn`` 0.2, ``alert`` 0.5 — the *w* that a 0.2-sd and a 0.5-sd
    normal location shift give on ten quantile bins (Cohen: 0.1 small, 0.3
    medium, 0.5 large); ``alpha`` 0.05 after Benjamini–Hochberg across the
    detector's columns; ``min_rows`` 100.

    >>> from detectors.profile import CategoricalCounts, CategoricalReference
    >>> ref = CategoricalReference.from_counts(CategoricalCounts(counts={"x": 500, "y": 500}))
    >>> s = Chi2().statistic(ref, CategoricalCounts(counts={"x": 300, "y": 700}))
    >>> round(s.value, 3), s.p_value < 1e-15
    (0.408, True)
    """

    name: ClassVar[str] = "chi2"
    statistic_name: ClassVar[str] = "cohens_w"
    applies_to = frozenset({"categorical"})
    params = drift_params(warn=0.2, alert=0.5, test=True)
    lambda_: ClassVar[str] = "pearson"


class GTest(_ContingencyDrift):
    """G-test (log-likelihood ratio) of homogeneity on the reference-vs-current table.

    :math:`G = 2 \\sum_{ij} O_{ij} \\ln (O_{ij}/E_{ij})` on the same table as
    :class:`Chi2`; the p-value is :math:`\\chi^2_{k-1}`'s at :math:`G/q`, Williams'
    small-sample correction (see :func:`contingency_test`).  :math:`G/(2N)` is the
    Jensen–Shannon divergence of the two samples weighted by their sizes, so
    the value reported, :math:`\\sqrt{G (n+m)/(nm)}`, is on the scale of
    Cohen's *w* (equal to it to second order).

    Defaults as :class:`Chi2`: ``warn`` 0.2, ``alert`` 0.5, ``alpha`` 0.05 (BH).

    >>> from detectors.profile import CategoricalCounts, CategoricalReference
    >>> ref = CategoricalReference.from_counts(CategoricalCounts(counts={"x": 500, "y": 500}))
    >>> s = GTest().statistic(ref, CategoricalCounts(counts={"x": 300, "y": 700}))
    >>> round(s.value, 3), s.p_value < 1e-15
    (0.41, True)
    """

    name: ClassVar[str] = "g_test"
    statistic_name: ClassVar[str] = "g_effect"
    applies_to = frozenset({"categorical"})
    params = drift_params(warn=0.2, alert=0.5, test=True)
    lambda_: ClassVar[str] = "log-likelihood"


class TotalVariation(BinnedDistance):
    """Total variation distance :math:`\\tfrac12 \\sum_i |p_i - q_i|`: the share of mass that moved.

    Over the categories plus ``<unseen>`` for categorical columns, over the
    ten reference-quantile bins for numeric ones.  The p-value is the
    chi-square homogeneity test on the same bins (categorical: on
    :func:`homogeneity_table`, every category its own column, sparse ones pooled).

    Defaults: ``warn`` 0.08, ``alert`` 0.2 — the distance a 0.2-sd and a
    0.5-sd normal location shift give on ten quantile bins; ``alpha`` 0.05
    (BH); ``min_rows`` 100.

    >>> from detectors.profile import CategoricalCounts, CategoricalReference
    >>> ref = CategoricalReference.from_counts(CategoricalCounts(counts={"x": 500, "y": 500}))
    >>> s = TotalVariation().statistic(ref, CategoricalCounts(counts={"x": 300, "y": 650, "z": 50}))
    >>> round(s.value, 3), s.p_value < 1e-15
    (0.2, True)
    """

    name: ClassVar[str] = "total_variation"
    statistic_name: ClassVar[str] = "total_variation"
    applies_to = frozenset({"numeric", "categorical"})
    params = drift_params(warn=0.08, alert=0.2, test=True)

    def distance(self, p: np.ndarray, q: np.ndarray) -> float:
        return total_variation(p, q)
