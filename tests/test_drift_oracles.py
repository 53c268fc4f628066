"""Each drift statistic against scipy on the same data, with stated tolerances.

Binned statistics are computed from the mergeable counts on the reference
grid (``NumericReference`` / ``NumericCounts``), scipy's from the raw
samples.  Stated tolerances (measured values in the comments):

* KS D: binned within 1e-3 of ``ks_2samp`` (measured ≤ 3e-4), never above
  it, so the binned p-value is conservative; ``exact: true`` equals it.
* Wasserstein-1 / reference sd: within 1 % of ``wasserstein_distance``
  (measured ≤ 0.3 %, ≤ 0.05 % under a real shift).
* Cramér–von Mises T: within 1 % (or 0.002) of ``cramervonmises_2samp`` on
  untied data (measured ≤ 0.1 % under a shift), p-value within 0.005
  (absolute); on tied data the
  ECDF form is checked against a direct evaluation (scipy's midrank formula
  is not this statistic with ties, and its level breaks: shown below).
  Ties are "material" when a bin holds 1 % of the pooled sample.
* Anderson–Darling: standardised statistic within 1 % (or 0.02) of
  ``anderson_ksamp(variant="midrank")`` on untied data (measured ≤ 0.4 %),
  p-value within 5 % (relative) inside scipy's table; on tied data the
  unstandardised A²akN equals scipy's to 1e-7.
* chi-square and G-test: equal to ``chi2_contingency(correction=False)``
  on the same (pooled) table, 1e-9.
* Jensen–Shannon distance: equal to ``jensenshannon(base=2)``, 1e-12.
* KL divergence: equal to ``entropy(q, p)`` on the smoothed shares, 1e-12.
* Wilcoxon rank sum: equal to ``mannwhitneyu(use_continuity=False)``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from detectors.drift_categorical import binned_pair, contingency_test, fisher_exact_p, merge_sparse
from detectors.drift_numeric import (
    PSI_EPSILON,
    _ad_sigma2,
    anderson_darling_binned,
    cramer_von_mises_binned,
    js_distance,
    kl_divergence,
    ks_binned,
    rank_test,
    wasserstein_binned,
)
from detectors.profile import CategoricalCounts, CategoricalReference, NumericCounts, NumericReference


def _mixture_outside(rng: np.random.Generator, n: int) -> np.ndarray:
    """A current window partly beyond both ends of a N(0, 1) reference."""
    return np.where(rng.random(n) < 0.3, rng.normal(-3.5, 1.0, n), rng.normal(2.5, 1.2, n))


CASES = {
    "normal_shift": lambda r: (r.normal(size=20000), r.normal(0.3, 1.2, size=8000)),
    "normal_nochange": lambda r: (r.normal(size=20000), r.normal(size=8000)),
    "normal_slight": lambda r: (r.normal(size=20000), r.normal(0.035, 1.0, size=8000)),
    "lognormal_slight": lambda r: (r.lognormal(0, 1, 20000), r.lognormal(0.04, 1, 8000)),
    "lognormal": lambda r: (r.lognormal(0, 1, 20000), r.lognormal(0.2, 1, 8000)),
    "cauchy": lambda r: (r.standard_cauchy(20000), r.standard_cauchy(8000) + 0.5),
    "student_t2": lambda r: (r.standard_t(2, 20000), r.standard_t(2, 8000) * 1.3),
    "outside_range": lambda r: (r.normal(size=20000), _mixture_outside(r, 8000)),
    "poisson": lambda r: (r.poisson(3, 20000).astype(float), r.poisson(3.4, 8000).astype(float)),
    "few_values": lambda r: (r.choice([0.0, 1.0, 2.5, 10.0], 20000, p=[0.5, 0.3, 0.15, 0.05]),
                             r.choice([0.0, 1.0, 2.5, 10.0], 8000, p=[0.45, 0.3, 0.2, 0.05])),
    "zero_inflated": lambda r: (np.where(r.random(20000) < 0.4, 0.0, r.exponential(size=20000)),
                                np.where(r.random(8000) < 0.3, 0.0, r.exponential(size=8000))),
}
DISCRETE = {"poisson", "few_values"}
TIED = DISCRETE | {"zero_inflated"}  # an atom holding 1 % or more of the pooled sample


@pytest.fixture(params=sorted(CASES), scope="module")
def case(request: pytest.FixtureRequest) -> tuple[str, np.ndarray, np.ndarray, NumericReference, NumericCounts]:
    x, y = CASES[request.param](np.random.default_rng(sorted(CASES).index(request.param)))
    ref = NumericReference.from_values(x)
    return request.param, x, y, ref, NumericCounts.of(y, ref)


def test_ks_binned_within_1e_3(case) -> None:
    _, x, y, ref, cur = case
    exact = stats.ks_2samp(x, y)
    d = ks_binned(ref.counts, cur.counts)
    assert abs(d - exact.statistic) <= 1e-3
    assert d <= exact.statistic + 1e-12  # the grid's edges are points of the exact supremum: conservative


def test_wasserstein_within_1_percent(case) -> None:
    _, x, y, ref, cur = case
    exact = stats.wasserstein_distance(x, y) / ref.std
    binned = wasserstein_binned(ref, cur) / ref.std
    assert binned == pytest.approx(exact, rel=0.01)


def test_cramer_von_mises(case) -> None:
    name, x, y, ref, cur = case
    t, p, omega2 = cramer_von_mises_binned(ref.counts, cur.counts)
    n, m = x.size, y.size
    assert omega2 == pytest.approx(t * (n + m) / (n * m), rel=1e-12)
    if name in TIED:
        # Anderson's ECDF form over the pooled sample, ties included, evaluated directly
        z = np.concatenate([x, y])
        f = np.searchsorted(np.sort(x), z, side="right") / n
        g = np.searchsorted(np.sort(y), z, side="right") / m
        direct = n * m / (n + m) ** 2 * np.sum((f - g) ** 2)
        assert t == pytest.approx(direct, rel=1e-9 if name in DISCRETE else 0.01)
        return
    res = stats.cramervonmises_2samp(x, y)
    assert t == pytest.approx(res.statistic, rel=0.01, abs=0.002)
    assert abs(p - res.pvalue) <= 0.005


def test_anderson_darling(case) -> None:
    name, x, y, ref, cur = case
    a2, p, dist = anderson_darling_binned(ref.counts, cur.counts)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns when it caps its p-value
        res = stats.anderson_ksamp([x, y], variant="midrank")
    n, m = x.size, y.size
    if name in TIED:
        # same A2akN; the standardisation differs on purpose (tie-aware variance, see test_drift_kernels)
        ours = dist * n * m / (n + m)
        theirs = res.statistic * np.sqrt(_ad_sigma2(n, m)) + 1
        assert ours == pytest.approx(theirs, rel=1e-7 if name in DISCRETE else 0.01)
        return
    assert a2 == pytest.approx(res.statistic, rel=0.01, abs=0.02)
    if 0.001 < res.pvalue < 0.25:
        assert p == pytest.approx(res.pvalue, rel=0.05)
    elif res.pvalue <= 0.001:
        assert p <= 0.0011  # scipy floors at 0.001; ours continues into the tail
    else:
        assert p >= 0.24  # scipy caps at 0.25


def test_wilcoxon_rank_sum_equals_mannwhitneyu(case) -> None:
    _, x, y, ref, cur = case
    _, p = rank_test(ref.counts, cur.counts, kind="wilcoxon")
    res = stats.mannwhitneyu(y, x, use_continuity=False, method="asymptotic")
    if case[0] in DISCRETE:
        assert p == pytest.approx(res.pvalue, rel=1e-6, abs=1e-300)
    else:
        assert p == pytest.approx(res.pvalue, rel=0.05, abs=1e-3)


def test_scipy_cvm_midrank_breaks_with_heavy_ties() -> None:
    """Why our CvM uses the ECDF form: scipy's rank formula with midranks rejects
    nearly every no-change sample of discrete data; ours keeps the level."""
    rng = np.random.default_rng(0)
    scipy_rejects = ours_rejects = 0
    for _ in range(100):
        x, y = rng.poisson(2, 2000).astype(float), rng.poisson(2, 150).astype(float)
        scipy_rejects += stats.cramervonmises_2samp(x, y).pvalue < 0.05
        ref = NumericReference.from_values(x)
        ours_rejects += cramer_von_mises_binned(ref.counts, NumericCounts.of(y, ref).counts)[1] < 0.05
    assert scipy_rejects > 80
    assert ours_rejects <= 12


# --------------------------------------------------------------------------- categorical and binned

def _categorical(rng: np.random.Generator) -> tuple[CategoricalReference, CategoricalCounts]:
    cats = [f"c{i}" for i in range(12)]
    w = np.array([30, 20, 15, 10, 8, 6, 4, 3, 2, 1, 0.15, 0.05])
    ref_values = rng.choice(cats, 5000, p=w / w.sum())
    w2 = w.copy()
    w2[:3] = [22, 24, 18]
    cur_values = np.concatenate([rng.choice(cats, 1900, p=w2 / w2.sum()), np.array(["new"] * 60 + ["newer"] * 3)])
    ref = CategoricalReference.from_counts(CategoricalCounts.of(ref_values))
    return ref, CategoricalCounts.of(cur_values)


@pytest.mark.parametrize("lambda_", ["pearson", "log-likelihood"])
def test_contingency_equals_chi2_contingency(lambda_: str) -> None:
    ref, cur = _categorical(np.random.default_rng(1))
    p, q, labels = binned_pair(ref, cur)
    assert labels[-1] == "<unseen>" and q[-1] == 63
    stat, pv, dof, pooled, exact = contingency_test(p, q, statistic=lambda_)
    assert not exact
    a, b, _ = merge_sparse(p, q)
    res = stats.chi2_contingency(np.stack([a, b]), correction=False, lambda_=lambda_)
    assert stat == pytest.approx(res.statistic, rel=1e-9)
    assert dof == res.dof
    assert pooled >= 1  # the rarest categories were pooled
    if lambda_ == "pearson":
        assert pv == pytest.approx(res.pvalue, rel=1e-9, abs=1e-300)
    else:  # G's p-value is that of G/q, Williams' q from the table's margins (Sokal & Rohlf, Biometry, 17.2)
        rows, cols = res.expected_freq.sum(axis=1), res.expected_freq.sum(axis=0)
        n_total, a_rows, b_cols = rows.sum(), len(rows), len(cols)
        q = 1 + (n_total * sum(1 / r for r in rows) - 1) * (n_total * sum(1 / c for c in cols) - 1) / (
            6 * n_total * (a_rows - 1) * (b_cols - 1))
        assert 1 < q < 1.01  # 2 000 rows against 5 000: a small correction
        assert pv == pytest.approx(stats.chi2.sf(res.statistic / q, res.dof), rel=1e-9, abs=1e-300)
        assert pv > res.pvalue


def test_williams_correction_brings_g_to_its_nominal_rate_on_small_windows() -> None:
    # 2 x 8 tables, 5 000 reference rows against 120 current ones from the same Zipf categories: expected
    # counts of 3-6 in the rare columns of the current row, where G runs liberal against chi-square
    rng = np.random.default_rng(7)
    w = 1.0 / np.arange(1, 9) ** 1.1
    w /= w.sum()
    corrected, raw = [], []
    for _ in range(4000):
        a, b = rng.multinomial(5000, w), rng.multinomial(120, w)
        stat, pv, dof, *_ = contingency_test(a, b, statistic="log-likelihood")
        corrected.append(pv)
        raw.append(stats.chi2.sf(stat, dof))
    corrected_rate, raw_rate = np.mean(np.array(corrected) <= 0.05), np.mean(np.array(raw) <= 0.05)
    se = np.sqrt(0.05 * 0.95 / 4000)
    assert raw_rate > corrected_rate
    assert abs(corrected_rate - 0.05) < 2.6 * se, (corrected_rate, raw_rate)


def test_contingency_without_sparse_columns_is_the_raw_table() -> None:
    p, q = np.array([400, 300, 200, 100]), np.array([380, 330, 190, 100])
    stat, pv, _, pooled, _ = contingency_test(p, q)
    res = stats.chi2_contingency(np.stack([p, q]), correction=False)
    assert pooled == 0
    assert (stat, pv) == pytest.approx((res.statistic, res.pvalue), rel=1e-12)


def test_fisher_exact_equals_scipy() -> None:
    # tables as the sparse path meets them (a rare column against the rest, small and large margins), ties
    # of equal probability (symmetric tables), zero cells and empty margins, in every orientation
    rng = np.random.default_rng(11)
    tables = [[[4950, 50], [30, 120]], [[8, 2], [1, 5]], [[5, 5], [5, 5]], [[0, 7], [7, 0]], [[10, 0], [20, 0]],
              [[0, 0], [3, 4]], [[999_000, 1_000], [148, 2]], [[3, 0], [0, 3]], [[1, 2], [3, 4]]]
    for _ in range(120):
        n_ref, n_cur = int(rng.integers(20, 200_000)), int(rng.integers(20, 2_000))
        share = rng.uniform(0.0005, 0.05)
        a, b = rng.binomial(n_ref, share), rng.binomial(n_cur, share * rng.choice([1.0, 1.0, 3.0, 0.2]))
        tables.append([[n_ref - a, a], [n_cur - b, b]])
    for t in tables:
        t = np.array(t)
        expected = stats.fisher_exact(t).pvalue
        for u in (t, t[::-1], t[:, ::-1], t.T):
            assert fisher_exact_p(u) == pytest.approx(expected, rel=1e-8, abs=1e-300), t.tolist()


def test_jensen_shannon_equals_scipy() -> None:
    rng = np.random.default_rng(2)
    ref, cur = _categorical(rng)
    p, q, _ = binned_pair(ref, cur)
    assert js_distance(p, q) == pytest.approx(jensenshannon(p / p.sum(), q / q.sum(), base=2), abs=1e-12)
    x = NumericReference.from_values(rng.lognormal(size=10000))
    c = NumericCounts.of(rng.lognormal(0.3, size=4000), x)
    p, q, _ = binned_pair(x, c)
    assert p.size == 10
    assert js_distance(p, q) == pytest.approx(jensenshannon(p, q, base=2), abs=1e-12)


def test_kl_equals_entropy_on_smoothed_shares() -> None:
    ref, cur = _categorical(np.random.default_rng(3))
    p, q, _ = binned_pair(ref, cur)  # the reference has no mass on <unseen>: smoothing needed
    ps, qs = np.maximum(p / p.sum(), PSI_EPSILON), np.maximum(q / q.sum(), PSI_EPSILON)
    assert kl_divergence(p, q) == pytest.approx(stats.entropy(qs, ps), abs=1e-12)
    assert np.isfinite(kl_divergence(p, q))
