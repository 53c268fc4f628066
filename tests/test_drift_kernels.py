"""Kernel edge cases, mergeability, smoothing, and the multivariate and exact options."""

from __future__ import annotations

import copy
import dataclasses
import math
import warnings
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest
from scipy import stats

from detectors.base import Batch, Context
from detectors.drift_categorical import Chi2, GTest, TotalVariation, binned_pair, contingency_test, merge_sparse
from detectors.drift_numeric import (
    KS,
    PSI,
    PSI_EPSILON,
    AndersonDarling,
    CramerVonMises,
    Hellinger,
    JensenShannon,
    KLDivergence,
    MeanShift,
    Wasserstein,
    ad_p_value,
    anderson_darling_binned,
    cramer_von_mises_binned,
    cvm_p_value,
    hellinger,
    js_distance,
    kl_divergence,
    ks_binned,
    psi,
    rank_test,
    rank_tests,
    tie_moments_cvm,
    tie_variance_ad,
    wasserstein_binned,
)
from detectors.multivariate import Multivariate
from detectors.profile import CategoricalCounts, CategoricalReference, NumericCounts, NumericReference, Profile
from detectors.quality import DataQuality
from detectors.registry import Registry
from tests.conftest import naive_stop_loss_p

CTX = Context(model="m", window_start=datetime(2026, 1, 1, tzinfo=UTC), window_end=datetime(2026, 1, 1, 1, tzinfo=UTC))


def batch(numeric: dict[str, np.ndarray], *, score: np.ndarray | None = None) -> Batch:
    n = len(next(iter(numeric.values())))
    return Batch(n_rows=n, numeric=numeric, categorical={}, sensitive={}, timestamp=np.zeros(0, np.int64), score=score)


# --------------------------------------------------------------------------- smoothing of empty bins

def test_psi_smoothing_of_empty_bins_is_documented_floor() -> None:
    """An empty bin's share is raised to 1e-4 (not dropped, not +1 counts): finite and large."""
    p, q = np.array([100, 100, 0]), np.array([90, 110, 0])
    ps, qs = np.maximum(p / p.sum(), PSI_EPSILON), np.maximum(q / q.sum(), PSI_EPSILON)
    assert psi(p, q) == pytest.approx(float(np.sum((qs - ps) * np.log(qs / ps))), rel=1e-15)
    # a bin the window leaves empty contributes (1e-4 - p) ln(1e-4 / p)
    one = psi(np.array([900, 100]), np.array([1000, 0]))
    assert one == pytest.approx((1.0 - 0.9) * math.log(1.0 / 0.9) + (1e-4 - 0.1) * math.log(1e-4 / 0.1), rel=1e-12)
    assert math.isfinite(one)


def test_kl_smoothing_floor_and_renormalise() -> None:
    p, q = np.array([1000, 0]), np.array([500, 500])
    ps = np.array([1.0, 1e-4]) / 1.0001
    assert kl_divergence(p, q) == pytest.approx(0.5 * math.log(0.5 / ps[0]) + 0.5 * math.log(0.5 / ps[1]), rel=1e-12)


def test_unsmoothed_distances_on_disjoint_supports() -> None:
    p, q = np.array([10, 0]), np.array([0, 10])
    assert js_distance(p, q) == 1.0
    assert hellinger(p, q) == 1.0
    assert js_distance(p, p) == 0.0 and hellinger(p, p) == 0.0 and kl_divergence(p, p) == 0.0


# --------------------------------------------------------------------------- edge cases

def test_single_bin_and_single_value_give_no_change() -> None:
    ref = NumericReference.from_values(np.full(500, 2.0))
    cur = NumericCounts.of(np.full(300, 2.0), ref)
    assert ks_binned(ref.counts, cur.counts) == 0.0
    assert wasserstein_binned(ref, cur) == 0.0
    assert cramer_von_mises_binned(ref.counts, cur.counts)[1:] == (1.0, 0.0)
    assert anderson_darling_binned(ref.counts, cur.counts) == (0.0, 1.0, 0.0)
    assert rank_test(ref.counts, cur.counts, kind="ansari") == (0.0, 1.0)
    for det in (PSI(), KS(), Wasserstein(), CramerVonMises(), AndersonDarling(), MeanShift(), JensenShannon()):
        s = det.statistic(ref, cur)
        assert s.value == 0.0 and (s.p_value is None or s.p_value >= 0.99), det.name


def test_constant_reference_moved_constant_is_finite_and_alerts() -> None:
    ref = NumericReference.from_values(np.full(500, 3.0))
    cur = NumericCounts.of(np.full(500, 4.0), ref)
    # the constant's grid bin is [3, the next float32 above 3): 2.4e-7 wide, so that float32 data of a
    # float64 reference stays in it; W1 spreads its mass over that width, a relative error of 1e-7
    assert wasserstein_binned(ref, cur) == pytest.approx(1.0, rel=1e-6)
    s = Wasserstein().statistic(ref, cur)
    pooled_sd = np.std(np.r_[np.full(500, 3.0), np.full(500, 4.0)], ddof=1)
    assert s.value == pytest.approx(1.0 / pooled_sd, rel=1e-6)
    assert "constant" in s.note
    assert MeanShift().statistic(ref, cur).value == pytest.approx(1.0 / pooled_sd, rel=1e-9)


def test_wasserstein_beyond_the_range_is_exact() -> None:
    x = np.arange(1000.0)
    ref = NumericReference.from_values(x)
    y = np.r_[np.arange(1000.0) + 5000.0, -np.arange(200.0) - 77.0]
    assert wasserstein_binned(ref, NumericCounts.of(y, ref)) == pytest.approx(stats.wasserstein_distance(x, y), rel=1e-4)


def test_merge_sparse_rules() -> None:
    # two sparse columns pooled into <other>, which is then dense enough
    a, b, k = merge_sparse(np.array([500, 400, 3, 2]), np.array([450, 450, 1, 4]))
    assert (a.tolist(), b.tolist(), k) == ([500, 400, 5], [450, 450, 5], 2)
    # one sparse column, still sparse when alone: folded into the smallest remaining column
    a, b, k = merge_sparse(np.array([500, 300, 2]), np.array([500, 300, 0]))
    assert (a.tolist(), b.tolist(), k) == ([500, 302], [500, 300], 1)
    # empty columns vanish; one column left: no test
    assert contingency_test(np.array([10, 0]), np.array([20, 0]))[:3] == (0.0, 1.0, 0)
    # a sparse column that folding would leave alone: the 2 x 2 table stays, tested exactly
    a, b, k = merge_sparse(np.array([4950, 40, 10]), np.array([30, 100, 20]))
    assert (a.tolist(), b.tolist(), k) == ([4950, 50], [30, 120], 2)
    t = contingency_test(np.array([4950, 40, 10]), np.array([30, 100, 20]))
    assert t.exact and t.dof == 1 and t.pooled == 2
    assert t.p_value == pytest.approx(stats.fisher_exact([[4950, 50], [30, 120]]).pvalue, rel=1e-8)
    assert t.statistic == pytest.approx(stats.chi2_contingency([[4950, 50], [30, 120]], correction=False).statistic)
    # every column sparse: nothing to test against
    assert contingency_test(np.array([3, 2, 1]), np.array([1, 2, 3]))[:2] == (0.0, 1.0)


@pytest.mark.parametrize("name", ["chi2", "g_test", "total_variation", "psi", "jensen_shannon", "hellinger"])
def test_a_rare_category_taking_over_a_small_window_is_found(name: str) -> None:
    # 1 % of the reference, 80 % of a 150-row window: its expected count (4.95) is below 5, and folding it
    # into the only other column used to leave no test at all (p = 1, every detector ok)
    det = Registry().create(name)
    ref = CategoricalReference.from_counts(CategoricalCounts(counts={"a": 4950, "b": 50}))
    (f,) = det.score(Profile(n_rows=5000, categorical={"x": ref}, roles={"x": "feature"}),
                     Profile(n_rows=150, categorical={"x": CategoricalCounts(counts={"a": 30, "b": 120})},
                             roles={"x": "feature"}), context=CTX)
    assert f.status == "alert", f
    assert f.p_value < 1e-100 and "Fisher's exact test" in f.note
    # the same as a numeric 0/1 flag, through the PSI bins
    x = np.r_[np.zeros(4950), np.ones(50)]
    nref = NumericReference.from_values(x)
    (g,) = det.score(Profile(n_rows=5000, numeric={"flag": nref}, roles={"flag": "feature"}),
                     Profile(n_rows=150, numeric={"flag": NumericCounts.of(np.r_[np.zeros(30), np.ones(120)], nref)},
                             roles={"flag": "feature"}), context=CTX) if name not in ("chi2", "g_test") else (f,)
    assert g.status == "alert", g


def test_the_exact_test_of_a_rare_column_keeps_its_level() -> None:
    # no change: 1 % rare category, 150-row windows; Fisher's test is conservative, so at most the nominal rate
    rng = np.random.default_rng(5)
    ref = rng.multinomial(5000, [0.99, 0.01])
    ps = []
    for _ in range(3000):
        cur = rng.multinomial(150, [0.99, 0.01])
        t = contingency_test(ref, cur)
        assert t.exact
        ps.append(t.p_value)
    rate = float(np.mean(np.array(ps) <= 0.05))
    assert rate <= 0.05 + 2.6 * math.sqrt(0.05 * 0.95 / 3000), rate


def test_categorical_distances_cover_unseen() -> None:
    ref = CategoricalReference.from_counts(CategoricalCounts(counts={"a": 700, "b": 300}))
    cur = CategoricalCounts(counts={"a": 600, "b": 300, "z": 100}, n_null=7)
    p, q, labels = binned_pair(ref, cur)
    assert labels == ["a", "b", "<unseen>"] and q.tolist() == [600, 300, 100]
    for det in (PSI(), JensenShannon(), KLDivergence(), Hellinger(), TotalVariation(), Chi2(), GTest()):
        s = det.statistic(ref, cur)
        assert math.isfinite(s.value) and s.value > 0 and s.p_value < 1e-10, det.name
        assert "unseen" in (s.note or ""), det.name
    assert TotalVariation().statistic(ref, cur).value == pytest.approx(0.1)


def test_null_and_nonfinite_values_are_excluded_and_stated() -> None:
    rng = np.random.default_rng(0)
    ref = NumericReference.from_values(rng.normal(size=2000))
    x = rng.normal(size=1000)
    x[:10], x[10:13], x[13:15] = np.nan, np.inf, -np.inf
    cur = NumericCounts.of(x, ref, n_null=4)  # 4 of the 10 NaN were Arrow nulls
    f = KS().score(Profile(n_rows=2000, numeric={"x": ref}), Profile(n_rows=1000, numeric={"x": cur}), context=CTX)[0]
    assert f.n_current == 985
    assert f.note == "excluded 15 of 1000 values (null 4, NaN 6, inf 5)"


@pytest.mark.parametrize("dtype", [np.float64, np.float32, np.float16])
def test_grid_counts_equal_a_naive_float64_count_at_every_edge(dtype: type) -> None:
    # values of the batch's own dtype hugging every grid edge from both sides, plus NaN and infinities:
    # each must land where comparing it, widened to float64, with the float64 edges puts it
    rng = np.random.default_rng(3)
    ref = NumericReference.from_values(rng.lognormal(size=5000) * 1e3)
    e = ref.edges.astype(dtype)
    near = np.concatenate([e, np.nextafter(e, dtype(-np.inf)), np.nextafter(e, dtype(np.inf)),
                           rng.lognormal(size=3000).astype(dtype) * dtype(1e3), [-1.0, 0.0, 6.5e4]])
    x = np.concatenate([near.astype(dtype), np.array([np.nan] * 5 + [np.inf] * 3 + [-np.inf] * 2, dtype=dtype)])
    rng.shuffle(x)
    cur = NumericCounts.of(x, ref, n_null=2)
    wide = x.astype(np.float64)
    finite = wide[np.isfinite(wide)]
    naive = np.bincount(np.searchsorted(ref.edges, finite, side="right"), minlength=ref.edges.size + 1)
    assert np.array_equal(cur.counts, naive)
    assert (cur.n_null, cur.n_nan, cur.n_posinf, cur.n_neginf) == (2, 3, 3, 2)
    assert cur.below_distance == pytest.approx((ref.edges[0] - finite[finite < ref.edges[0]]).sum(), rel=1e-12)
    assert cur.above_distance == pytest.approx((finite[finite >= ref.edges[-1]] - ref.edges[-1]).sum(), rel=1e-12)
    # float32 batches are summed in float32 (see _shifted_sums): errors far below a standard error
    assert abs(cur.mean - finite.mean()) <= (1e-12 if dtype == np.float64 else 1e-6) * finite.std()
    assert cur.m2 == pytest.approx(((finite - finite.mean()) ** 2).sum(), rel=1e-9 if dtype == np.float64 else 1e-5)


@pytest.mark.parametrize("shift", [0.0, 1e3, 1e5])
def test_float32_moments_hold_far_from_the_reference_mean(shift: float) -> None:
    # the sums are taken about the batch's own median: a window far from the reference loses no digits
    rng = np.random.default_rng(5)
    ref = NumericReference.from_values(rng.normal(size=5000))
    x = (rng.normal(size=262_144) + shift).astype(np.float32)
    cur = NumericCounts.of(x, ref)
    wide = x.astype(np.float64)
    assert abs(cur.mean - wide.mean()) <= 1e-5 * wide.std()
    assert cur.m2 == pytest.approx(((wide - wide.mean()) ** 2).sum(), rel=1e-4)


def _grid(edges: list[float]) -> NumericReference:
    """A reference with exactly these interior edges (the rest of it is not read by counting)."""
    e = np.array(edges)
    return NumericReference(edges=e, counts=np.zeros(e.size + 1, np.int64), psi_cuts=np.zeros(1, np.intp),
                            n=0, n_missing=0, mean=0.0, std=0.0, minimum=float(e[0]), maximum=float(e[-1]))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize(("values", "expected"), [
    ([], [0, 0, 0, 0]),
    ([1.0], [0, 1, 0, 0]),                        # on the first edge: in the bin it opens
    ([0.5], [1, 0, 0, 0]),                        # below the first edge
    ([3.0], [0, 0, 0, 1]),                        # on the last edge: the top slot
    ([2.0, 3.0], [0, 0, 1, 1]),
    ([1.999, 9.0], [0, 1, 0, 1]),
    ([0.5, 1.0, 1.0, 2.0, 2.5, 3.0, 3.0, 7.0], [1, 2, 2, 3]),  # more values than edges: the other search
    ([1.0, 1.0, 1.0, 1.0], [0, 4, 0, 0]),
    ([-5.0, -5.0, -5.0, -5.0], [4, 0, 0, 0]),     # every edge above every value
    ([5.0, 5.0, 5.0, 5.0], [0, 0, 0, 4]),         # every edge below every value
    ([3.0, 3.0, 3.0, np.nan, np.inf], [0, 0, 0, 3]),
])
def test_values_on_an_edge_count_in_the_bin_it_opens(values: list[float], expected: list[int], dtype: type) -> None:
    # batches shorter than the grid search each value in the edges, longer ones each edge in the values:
    # both put a value equal to an edge above it, and values beyond either end in the outer slots
    cur = NumericCounts.of(np.array(values, dtype=dtype), _grid([1.0, 2.0, 3.0]))
    assert cur.counts.dtype == np.int64
    assert cur.counts.tolist() == expected


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_both_searches_agree_with_a_naive_count_around_the_switch(dtype: type) -> None:
    # batches of one value fewer than the grid's edges up to one more, made of the edges themselves, their
    # neighbours and values beyond either end: every size counts as comparing in float64 does
    rng = np.random.default_rng(11)
    ref = NumericReference.from_values(rng.lognormal(size=4000))
    e = ref.edges.astype(dtype)
    pool = np.concatenate([e, np.nextafter(e, dtype(-np.inf)), np.nextafter(e, dtype(np.inf)),
                           np.array([e[0] / 2, e[-1] * 2], dtype)])
    for size in (0, 1, 2, 63, 64, 65, ref.edges.size - 1, ref.edges.size, ref.edges.size + 1, 3 * ref.edges.size):
        x = rng.choice(pool, size).astype(dtype)
        wide = x.astype(np.float64)
        naive = np.bincount(np.searchsorted(ref.edges, wide, side="right"), minlength=ref.edges.size + 1)
        assert np.array_equal(NumericCounts.of(x, ref).counts, naive), size


def test_float32_sums_that_would_overflow_are_redone_in_float64_without_warnings() -> None:
    # differences or squares beyond float32's 3.4e38 fall back to float64 without leaking an overflow warning
    ref = _grid([0.0, 1.0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for values in ([-3e38, 3e38], [-3e38, 0.0, 3e38], [1e19, 2e19, 3e19, 4e19, 5e19], [-1e18, 0.0, 1e18],
                       [3e38, 3e38, 3e38]):
            x = np.array(values, np.float32)
            cur = NumericCounts.of(x, ref)
            wide = x.astype(np.float64)
            assert cur.mean == pytest.approx(wide.mean(), rel=1e-6, abs=1e-6 * wide.std())
            assert cur.m2 == pytest.approx(((wide - wide.mean()) ** 2).sum(), rel=1e-6, abs=1e-300)


# --------------------------------------------------------------------------- p-value maps

def test_cvm_p_value_tail_is_monotone_and_continuous() -> None:
    ts = np.linspace(0.05, 60, 400)
    p = np.array([cvm_p_value(t, n_reference=5000, n_current=5000) for t in ts])
    assert np.all(np.diff(p) <= 0)
    assert p[-1] < 1e-60
    # around the switch to Smirnov's integral the two computations agree
    from detectors.drift_numeric import _cvm_cdf_inf, _cvm_sf_inf
    for x in (0.6, 1.0, 1.5, 2.0):
        assert _cvm_sf_inf(x) == pytest.approx(1 - _cvm_cdf_inf(x), rel=1e-6)


@pytest.mark.parametrize("x", [0.5, 1.0, 2.0, 5.0, 10.0, 30.0])
def test_cvm_tail_equals_a_30_digit_quadrature(x: float) -> None:
    # the oracle: Smirnov's series integrated by mpmath at 30 digits, the singular ends split off
    import mpmath as mp

    from detectors.drift_numeric import _cvm_sf_inf
    mp.mp.dps = 30
    total = mp.mpf(0)
    for j in range(1, 8):
        a, b = (2 * j - 1) * mp.pi, 2 * j * mp.pi
        v = mp.quad(lambda u: 2 * mp.sqrt(-u / mp.sin(u)) * mp.exp(-x * u * u / 2) / u,
                    [a, a + mp.mpf("1e-3"), a + 0.1, a + 1, b - 0.1, b])
        total += v if j % 2 else -v
    assert _cvm_sf_inf(x) == pytest.approx(float(mp.re(total) / mp.pi), rel=1e-6)


def test_ad_p_value_matches_scipy_table_and_extends_it() -> None:
    import warnings
    rng = np.random.default_rng(1)
    for shift in (0.0, 0.05, 0.1, 0.15):
        x, y = rng.normal(size=1000), rng.normal(shift, size=800)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = stats.anderson_ksamp([x, y], variant="midrank")
        if 0.001 < res.pvalue < 0.25:
            assert ad_p_value(float(res.statistic)) == pytest.approx(res.pvalue, rel=1e-9)
    grid = np.linspace(-2, 40, 500)
    p = np.array([ad_p_value(a) for a in grid])
    assert np.all(np.diff(p) <= 0) and p[0] <= 1.0 and p[-1] < 1e-10
    assert ad_p_value(6.6) < 0.001 < ad_p_value(6.4)


def test_tie_moments_reduce_to_the_continuous_limits() -> None:
    h = np.full(5000, 1 / 5000)
    mean, var = tie_moments_cvm(h)
    assert mean == pytest.approx(1 / 6, rel=1e-3) and var == pytest.approx(1 / 45, rel=1e-3)
    assert tie_variance_ad(h) == pytest.approx(2 * (math.pi ** 2 - 9) / 3, rel=0.01)
    # a Bernoulli column: one bridge value, T/n_eff = p(1-p) B(1-p)^2 ... mean p(1-p)^2 ... checked by simulation
    rng = np.random.default_rng(2)
    sims = []
    for _ in range(2000):
        x, y = rng.random(3000) < 0.3, rng.random(3000) < 0.3
        sims.append(cramer_von_mises_binned(np.array([0, (~x).sum(), x.sum(), 0]),
                                            np.array([0, (~y).sum(), y.sum(), 0]))[0])
    mean, var = tie_moments_cvm(np.array([0.7, 0.3]))
    assert np.mean(sims) == pytest.approx(mean, rel=0.1)
    assert np.var(sims) == pytest.approx(var, rel=0.2)


def test_rank_tests_against_scipy() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=3000), rng.normal(0.0, 1.2, size=1000)
    ref = NumericReference.from_values(x)
    cur = NumericCounts.of(y, ref)
    _, p_w = rank_test(ref.counts, cur.counts, kind="wilcoxon")
    _, p_a = rank_test(ref.counts, cur.counts, kind="ansari")
    assert p_w == pytest.approx(stats.mannwhitneyu(y, x, use_continuity=False).pvalue, rel=0.02)
    assert p_a == pytest.approx(stats.ansari(y, x).pvalue, rel=0.05)


def _naive_rank_test(p: np.ndarray, q: np.ndarray, kind: str) -> tuple[float, float]:
    """Every rank spelled out: tied bins share their mean score, the out-of-range slots' current-only
    values keep their own scores; the permutation mean and variance of the current's score sum."""
    big_n = int(p.sum() + q.sum())
    scores, is_current = [], []
    rank = 0
    for j, (pj, qj) in enumerate(zip(p.tolist(), q.tolist(), strict=True)):
        l = pj + qj
        ranks = np.arange(rank + 1, rank + l + 1, dtype=float)
        a = ranks if kind == "wilcoxon" else np.minimum(ranks, big_n + 1 - ranks)
        distinct = j in (0, len(p) - 1) and pj == 0
        scores += list(a) if distinct or l == 0 else [a.mean()] * l
        is_current += [False] * pj + [True] * qj  # within a bin the order does not matter
        rank += l
    a, cur = np.array(scores), np.array(is_current)
    n, m = big_n - cur.sum(), cur.sum()
    var = n * m / (big_n * (big_n - 1)) * np.sum((a - a.mean()) ** 2)
    if var <= 1e-9 * np.sum(a * a):  # every score alike: nothing to test
        return 0.0, 1.0
    z = (a[cur].sum() - m * a.mean()) / math.sqrt(var)
    return z, 2 * stats.norm.sf(abs(z))


def test_rank_tests_equal_spelled_out_ranks() -> None:
    """Odd and even N (the Ansari fold inside a bin or between bins), empty bins, current-only slots —
    also a current-only slot that holds the fold — integer and float counts."""
    rng = np.random.default_rng(11)
    straddled = 0
    for trial in range(400):
        k = int(rng.integers(3, 12))
        p, q = rng.poisson(6, k), rng.poisson(6, k)
        p[0], p[-1] = (0 if trial % 2 else p[0]), (0 if trial % 3 else p[-1])
        q[int(rng.integers(k))] = 0
        if trial % 5 == 0:  # a current-only run longer than everything else: it holds the fold
            end = 0 if trial % 10 else -1
            p[end], q[end] = 0, int(p.sum() + q.sum()) + int(rng.integers(1, 40))
        if p.sum() == 0 or q.sum() == 0:
            continue
        big_n = int(p.sum() + q.sum())
        fold = (big_n + 1) // 2
        straddled += bool((p[0] == 0 and q[0] >= fold) or (p[-1] == 0 and q[-1] > big_n - fold))
        counts = (p, q) if trial % 4 else (p.astype(np.float64), q.astype(np.float64))
        got = rank_tests(*counts)
        for kind in ("wilcoxon", "ansari"):
            z, pv = _naive_rank_test(p, q, kind)
            assert got[kind][0] == pytest.approx(z, rel=1e-9, abs=1e-12), (kind, p, q)
            assert got[kind][1] == pytest.approx(pv, rel=1e-9, abs=1e-300), (kind, p, q)
            assert rank_test(*counts, kind=kind) == got[kind]
    assert straddled >= 30
    with pytest.raises(ValueError, match="kind"):
        rank_test(p, q, kind="mood")
    with pytest.raises(ValueError, match="finite"):
        rank_tests(np.array([1.0, np.nan]), np.array([1.0, 2.0]))


def test_ad_with_runs_beyond_the_reference_equals_scipy_midrank() -> None:
    """Integers inside the reference range (each in its own grid bin, so binned ties are real ties, none
    of them material) and distinct current values beyond both ends: the binned A2 is scipy's midrank
    statistic exactly, for runs summed as floats (<= 64 values) and as arrays (> 64)."""
    rng = np.random.default_rng(13)
    x = rng.integers(0, 1000, 3000).astype(float)
    for below, above in ((3, 40), (70, 0), (5, 500)):
        y = np.concatenate([rng.integers(30, 1000, 2000).astype(float), rng.uniform(-9, -1, below),
                            x.max() + rng.uniform(1, 9, above)])
        ref = NumericReference.from_values(x)
        a2, _, _ = anderson_darling_binned(ref.counts, NumericCounts.of(y, ref).counts)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # scipy: "p-value floored"
            r = stats.anderson_ksamp([x, y], variant="midrank")
        assert a2 == pytest.approx(float(r.statistic), rel=1e-9), (below, above)


def test_ad_p_value_continues_the_table_along_its_tangent() -> None:
    """Beyond Scholz & Stephens' table log p is linear with the fitted quadratic's slope at the end."""
    lo, hi = 0.325, 6.546  # the k = 2 table's ends
    h = 1e-6
    for end, outside in ((hi, (hi + 1, hi + 3, hi + 7)), (lo, (lo - 0.2, lo - 0.5))):
        inside = end - h if end == hi else end + h
        slope = (math.log(ad_p_value(end)) - math.log(ad_p_value(inside))) / (end - inside)
        for a2 in outside:
            expected = math.log(ad_p_value(end)) + slope * (a2 - end)
            assert math.log(ad_p_value(a2)) == pytest.approx(expected, rel=1e-5)
    assert ad_p_value(30.0) < 1e-10 and ad_p_value(-5.0) == 1.0


def test_shared_tests_are_computed_once_per_pair_and_redone_for_another_reference(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """JS, KL, Hellinger and TV share one chi-square per (reference, current) pair, wasserstein and
    cramer_von_mises one CvM test: computed once, the same answers as fresh counts, and another
    reference (or replaced counts) is not served the first one's result."""
    import detectors.drift_categorical as dc
    import detectors.drift_numeric as dn

    calls: list[str] = []

    def spy(name: str, fn: Any) -> Any:
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            calls.append(name)
            return fn(*args, **kwargs)
        return wrapped

    monkeypatch.setattr(dc, "contingency_test", spy("chi2", dc.contingency_test))
    monkeypatch.setattr(dn, "cramer_von_mises_binned", spy("cvm", dn.cramer_von_mises_binned))
    rng = np.random.default_rng(12)
    ref_a = NumericReference.from_values(rng.normal(size=4000))
    values = rng.normal(0.2, size=3000)
    cur = NumericCounts.of(values, ref_a)
    detectors = [JensenShannon(), KLDivergence(), Hellinger(), TotalVariation(), Wasserstein(), CramerVonMises(),
                 MeanShift()]
    shared = [d.statistic(ref_a, cur) for d in detectors]
    assert sorted(calls) == ["chi2", "cvm"]
    fresh = [d.statistic(ref_a, NumericCounts.of(values, ref_a)) for d in detectors]
    assert shared == fresh
    assert shared[0].p_value == shared[1].p_value == shared[2].p_value == shared[3].p_value
    assert shared[4].p_value == shared[5].p_value  # W1's p-value is the CvM test's
    # the same counts against another reference on the same grid: recomputed, not served from the memo
    shifted = ref_a.counts.copy()
    shifted[1: shifted.size // 2] += 5
    ref_c = dataclasses.replace(ref_a, counts=shifted, n=int(shifted.sum()))
    against_c = [d.statistic(ref_c, cur) for d in detectors]
    assert against_c == [d.statistic(ref_c, NumericCounts.of(values, ref_a)) for d in detectors]
    assert [s.p_value for s in against_c] != [s.p_value for s in shared]
    assert [d.statistic(ref_a, cur) for d in detectors] == shared
    # counts replaced by assignment, and a copy given other counts: neither sees the stored result
    calls.clear()
    other = NumericCounts.of(rng.normal(1.0, size=3000), ref_a)
    cur.counts = other.counts
    assert JensenShannon().statistic(ref_a, cur).p_value == JensenShannon().statistic(ref_a, other).p_value
    twin = copy.copy(other)
    twin.counts = NumericCounts.of(values, ref_a).counts
    assert JensenShannon().statistic(ref_a, twin) == shared[0]
    assert calls.count("chi2") == 3


def test_chi2_and_g_test_on_the_same_counts_keep_their_own_tests() -> None:
    """The shared table is keyed by its statistic: the G-test is not served chi2's result (nor the
    reverse), and categorical counts realign for another reference."""
    ref = CategoricalReference.from_counts(CategoricalCounts(counts={"a": 600, "b": 300, "c": 100}))
    cur = CategoricalCounts(counts={"a": 450, "b": 400, "c": 100, "z": 50})
    chi, g = Chi2().statistic(ref, cur), GTest().statistic(ref, cur)
    assert chi.note.startswith("pearson") and g.note.startswith("log-likelihood")
    assert chi.value != g.value and chi.p_value != g.p_value
    assert chi == Chi2().statistic(ref, CategoricalCounts(counts=dict(cur.counts)))
    assert g == GTest().statistic(ref, CategoricalCounts(counts=dict(cur.counts)))
    other = CategoricalReference.from_counts(CategoricalCounts(counts={"z": 500, "a": 500}))
    aligned, unseen, names = cur.aligned(other)
    assert aligned.tolist() == [450, 50] and unseen == 500 and names == ["b", "c"]
    assert cur.aligned(ref)[0].tolist() == [450, 400, 100]
    with pytest.raises(ValueError):
        aligned[0] = 1  # stored results are read-only


# --------------------------------------------------------------------------- mergeability

def _batches(values: np.ndarray, parts: int) -> list[np.ndarray]:
    return np.array_split(values, parts)


def test_merged_partial_counts_equal_counting_at_once() -> None:
    rng = np.random.default_rng(4)
    ref_values = {"normal": rng.normal(size=5000), "poisson": rng.poisson(3, 5000).astype(float),
                  "heavy": rng.standard_cauchy(5000)}
    cur_values = {"normal": rng.normal(0.4, 1.5, size=3001), "poisson": rng.poisson(3.5, 3001).astype(float),
                  "heavy": rng.standard_cauchy(3001) * 3}
    cur_values["normal"][::97] = np.nan
    cur_values["heavy"][::89] = np.inf
    for col, x in ref_values.items():
        ref = NumericReference.from_values(x)
        whole = NumericCounts.of(cur_values[col], ref)
        parts = [NumericCounts.of(b, ref) for b in _batches(cur_values[col], 7)]
        merged = parts[0]
        for part in parts[1:]:
            merged = merged.merge(part)
        assert np.array_equal(merged.counts, whole.counts)
        assert (merged.n_nan, merged.n_posinf, merged.n_neginf, merged.n_null) == \
               (whole.n_nan, whole.n_posinf, whole.n_neginf, whole.n_null)
        # every statistic that reads only the counts is bit-identical
        for det in (PSI(), KS(), JensenShannon(), KLDivergence(), Hellinger(), TotalVariation(),
                    CramerVonMises(), AndersonDarling()):
            assert det.statistic(ref, merged) == det.statistic(ref, whole), det.name
        # those that also read float sums (mean, m2, out-of-range sums) agree to rounding
        for det in (Wasserstein(), MeanShift()):
            a, b = det.statistic(ref, merged), det.statistic(ref, whole)
            assert a.value == pytest.approx(b.value, rel=1e-12, abs=1e-15) and a.p_value == b.p_value, det.name


def test_merged_category_counts_equal_counting_at_once() -> None:
    rng = np.random.default_rng(5)
    values = rng.choice(list("abcdefg"), 4000, p=[0.3, 0.2, 0.2, 0.1, 0.1, 0.05, 0.05])
    ref = CategoricalReference.from_counts(CategoricalCounts.of(rng.choice(list("abcdef"), 5000)))
    whole = CategoricalCounts.of(values)
    merged = CategoricalCounts()
    for b in _batches(values, 6):
        merged = merged.merge(CategoricalCounts.of(b))
    assert merged.counts == whole.counts
    for det in (Chi2(), GTest(), PSI(), JensenShannon(), TotalVariation()):
        assert det.statistic(ref, merged) == det.statistic(ref, whole)


# --------------------------------------------------------------------------- multivariate

def _correlated(rng: np.random.Generator, n: int, rho: float, d: int = 10) -> dict[str, np.ndarray]:
    a = rng.normal(size=n)
    cols = {"f0": a, "f1": rho * a + math.sqrt(1 - rho * rho) * rng.normal(size=n)}
    for i in range(2, d):
        cols[f"f{i}"] = rng.normal(size=n)
    return cols


def _profiles(det, ref_cols, cur_parts):
    ref_batch = batch(ref_cols)
    ref = Profile(n_rows=ref_batch.n_rows, numeric={c: NumericReference.from_values(v) for c, v in ref_cols.items()},
                  extras={det.key: det.reference_extra(ref_batch)} if det.uses_batches else {})
    cur = Profile(n_rows=0, numeric={c: NumericCounts.empty(r) for c, r in ref.numeric.items()})
    for part in cur_parts:
        b = batch(part)
        extra = det.batch_extra(ref.extras.get(det.key), b) if det.uses_batches else None
        cur = cur.merge(Profile(n_rows=b.n_rows, numeric={c: NumericCounts.of(v, ref.numeric[c]) for c, v in part.items()},
                                extras={det.key: extra} if extra is not None else {}))
    return ref, cur


def test_multivariate_catches_a_flipped_correlation_no_marginal_shows() -> None:
    rng = np.random.default_rng(6)
    ref_cols = _correlated(rng, 10000, 0.8)
    cur_cols = _correlated(rng, 5000, -0.8)
    parts = [{k: v[i::3] for k, v in cur_cols.items()} for i in range(3)]
    for det in (KS(), Wasserstein(), PSI(), MeanShift(), CramerVonMises()):
        ref, cur = _profiles(det, ref_cols, parts)
        assert all(f.status == "ok" for f in det.score(ref, cur, context=CTX)), det.name
    det = Multivariate()
    ref, cur = _profiles(det, ref_cols, parts)
    (f,) = det.score(ref, cur, context=CTX)
    assert f.status == "alert" and f.value > 2 and f.p_value < 1e-10
    assert f.target == "numeric_features" and f.kind == "drift"


def test_multivariate_is_quiet_on_large_no_change_windows() -> None:
    """Held-out reference errors: a 60k-row window of the same distribution is not 'drift'."""
    rng = np.random.default_rng(7)
    det = Multivariate()
    ref, cur = _profiles(det, _correlated(rng, 4000, 0.6, d=20), [_correlated(rng, 20000, 0.6, d=20) for _ in range(3)])
    (f,) = det.score(ref, cur, context=CTX)
    assert f.status == "ok" and 0.9 < f.value < 1.1


def test_multivariate_states_exclusions_and_merges_exactly() -> None:
    rng = np.random.default_rng(8)
    ref_cols = _correlated(rng, 3000, 0.7, d=4) | {"flat": np.ones(3000)}
    cur_cols = _correlated(rng, 2000, 0.7, d=4) | {"flat": np.ones(2000)}
    cur_cols["f2"][:50] = np.nan
    cur_cols["f3"][50:60] = np.inf
    det = Multivariate()
    ref, cur = _profiles(det, ref_cols, [{k: v[:700] for k, v in cur_cols.items()},
                                         {k: v[700:] for k, v in cur_cols.items()}])
    _, whole = _profiles(det, ref_cols, [cur_cols])
    assert np.array_equal(cur.extras[det.key].counts, whole.extras[det.key].counts)
    (f,) = det.score(ref, cur, context=CTX)
    assert f.n_current == 1940
    assert "excluded 60 of 2000 rows" in f.note and "flat" in f.note


# --------------------------------------------------------------------------- exact KS on request

def test_ks_exact_uses_the_raw_samples_through_the_batch_hooks() -> None:
    rng = np.random.default_rng(9)
    x, s_ref = rng.normal(size=3000), rng.uniform(size=3000)
    y, s_cur = rng.normal(0.1, size=2000), rng.uniform(0.05, 1, size=2000)
    det = KS(exact=True)
    assert det.uses_batches and not KS().uses_batches and det.key != KS().key
    ref_batch = batch({"x": x}, score=s_ref)
    ref = Profile(n_rows=3000, numeric={"x": NumericReference.from_values(x), "score": NumericReference.from_values(s_ref)},
                  roles={"x": "feature", "score": "score"}, extras={det.key: det.reference_extra(ref_batch)})
    cur = Profile(n_rows=0, numeric={c: NumericCounts.empty(r) for c, r in ref.numeric.items()}, roles=ref.roles)
    for lo, hi in ((0, 800), (800, 2000)):
        b = batch({"x": y[lo:hi]}, score=s_cur[lo:hi])
        cur = cur.merge(Profile(n_rows=hi - lo, numeric={"x": NumericCounts.of(y[lo:hi], ref.numeric["x"]),
                                                         "score": NumericCounts.of(s_cur[lo:hi], ref.numeric["score"])},
                                extras={det.key: det.batch_extra(ref.extras[det.key], b)}))
    found = {f.target: f for f in det.score(ref, cur, context=CTX)}
    for col, (a, b) in {"x": (x, y), "score": (s_ref, s_cur)}.items():
        res = stats.ks_2samp(a, b)
        assert found[col].value == res.statistic and found[col].p_value == res.pvalue
        assert found[col].note == "exact"
    binned = {f.target: f for f in KS().score(ref, cur, context=CTX)}
    assert abs(binned["x"].value - found["x"].value) <= 1e-3


# --------------------------------------------------------------------------- data quality

def test_data_quality_reference_split_and_baselines() -> None:
    rng = np.random.default_rng(10)
    x = rng.normal(size=5000)
    x[:50] = np.nan  # 1 % missing in the reference as well
    ref = NumericReference.from_values(x)
    det = DataQuality()
    ref_profile = Profile(n_rows=5000, numeric={"x": ref}, roles={"x": "feature"},
                          extras={det.key: det.reference_extra(batch({"x": x}))})
    y = rng.normal(size=4000)
    y[:40] = np.nan  # the same 1 %: not an alarm
    found = {f.statistic: f for f in det.score(ref_profile, Profile(n_rows=4000, numeric={"x": NumericCounts.of(y, ref)}),
                                               context=CTX)}
    assert found["missing_rate"].status == "ok" and found["missing_rate"].threshold == pytest.approx(0.01 + 0.01)
    assert found["out_of_range_rate"].threshold == pytest.approx(2 / (ref.n + 1) + 0.01)
    y[40:400] = np.nan  # 10 %: alert
    found = {f.statistic: f for f in det.score(ref_profile, Profile(n_rows=4000, numeric={"x": NumericCounts.of(y, ref)}),
                                               context=CTX)}
    assert found["missing_rate"].status == "alert" and found["missing_rate"].value == pytest.approx(0.1)


# --------------------------------------------------------------------------- data quality: exact range and unseen tests
# The out-of-range and unseen-category p-values put the reference's own sampling noise in the null
# (detectors/quality.py): checked here against scipy distributions, exact enumeration and Monte Carlo
# permutations.  Null and power runs are in tests/test_drift_calibration.py.

import itertools  # noqa: E402  (this section's own imports, appended)

from detectors import quality as dq  # noqa: E402


def _zipf(k: int, a: float) -> np.ndarray:
    w = 1.0 / np.arange(1, k + 1) ** a
    return w / w.sum()


def test_data_quality_out_of_range_p_equals_betabinom_nhypergeom_and_exact_sum() -> None:
    """P(K >= k) for K ~ BetaBinomial(m, 2, n - 1) = NegHypergeom(N, m, 2).

    Oracles: the log-sum of scipy's betabinom.logpmf over j >= k (1e-8 relative, down to 1e-300);
    scipy's betabinom.sf and nhypergeom.sf to 1e-6 relative or 1e-9 absolute (they subtract a
    summed cdf from 1: 4e-4 relative error at 2e-8, 4e-10 absolute at N = 1e6, against mpmath);
    and the exact sum
    sum_{j>=k} (j + 1) C(N-j-2, n-2) / C(N, n) with Python integers (1e-12).
    """
    for m, n in [(200, 50), (30, 5), (10_000, 100), (10_000, 200), (2_000, 2_000), (100_000, 300)]:
        ks = sorted({1, 5, 2 * m // (n + 1), 4 * m // (n + 1) + 3, m // 10, m})
        for k in ks:
            got = dq.out_of_range_p(k, m, n)
            sf = stats.betabinom.sf(k - 1, m, 2, n - 1)
            assert got == pytest.approx(sf, rel=1e-6, abs=1e-9), (m, n, k)
            assert got == pytest.approx(stats.nhypergeom.sf(k - 1, n + m, m, 2), rel=1e-6, abs=1e-9), (m, n, k)
            tail = np.exp(special_logsumexp(stats.betabinom.logpmf(np.arange(k, m + 1), m, 2, n - 1)))
            assert got == pytest.approx(tail, rel=1e-8, abs=1e-300), (m, n, k)
    for m, n in [(50, 3), (120, 40), (300, 300)]:
        big_n = n + m
        for k in (1, 3, 10, m // 2, m):
            exact = sum((j + 1) * math.comb(big_n - j - 2, n - 2) for j in range(k, m + 1)) / math.comb(big_n, n)
            assert dq.out_of_range_p(k, m, n) == pytest.approx(exact, rel=1e-12), (m, n, k)
    assert dq.out_of_range_p(0, 100, 100) == 1.0 and dq.out_of_range_p(5, 100, 1) == 1.0
    assert dq.out_of_range_p(101, 100, 100) == 0.0


def special_logsumexp(x: np.ndarray) -> float:
    top = float(np.max(x))
    return top + math.log(float(np.exp(x - top).sum()))


def test_data_quality_out_of_range_p_matches_permutation_monte_carlo() -> None:
    """The reference as a random n of the N pooled ranks (numpy permutations, 20 000 draws):
    the share of draws with K >= k equals out_of_range_p within 4 standard errors, and the test's
    rejection rate at 1 %, 5 % and 10 % equals the exact size P(p <= alpha) <= alpha."""
    rng = np.random.default_rng(40)
    n, m, draws = 20, 500, 20_000
    big_n = n + m
    ref_ranks = np.argsort(rng.random((draws, big_n)), axis=1)[:, :n]   # a uniform n-subset per draw
    k = ref_ranks.min(axis=1) + (big_n - 1 - ref_ranks.max(axis=1))     # window values beyond both ends
    for kk in (1, 10, 24, 48, 80, 130, 200):
        p = dq.out_of_range_p(kk, m, n)
        mc = float(np.mean(k >= kk))
        assert abs(mc - p) <= 4 * math.sqrt(p * (1 - p) / draws) + 1e-4, (kk, mc, p)
    p_all = np.array([dq.out_of_range_p(kk, m, n) for kk in range(m + 1)])
    p_draw = p_all[k]
    for alpha in (0.01, 0.05, 0.1):
        size = float(p_all[p_all <= alpha].max())                        # exact size of the discrete test
        rate = float(np.mean(p_draw <= alpha))
        assert size <= alpha and abs(rate - size) <= 4 * math.sqrt(size * (1 - size) / draws), (alpha, rate, size)


def test_data_quality_absent_probability_equals_hypergeom() -> None:
    """q_t = C(N - t, n) / C(N, n) is scipy's hypergeom.pmf(0, N, t, n), to 1e-9 relative (0 for t > m)."""
    for n, m in [(300, 10_000), (5_000, 10_000), (100, 1_000_000), (7, 5)]:
        big_n = n + m
        for t in (1, 2, 3, 10, 50, 333, 2_000, m, m + 1):
            if t >= big_n:
                continue
            q = dq.absent_probability(np.array([t, big_n - t]), n)
            for tt, qq in ((t, q[0]), (big_n - t, q[1])):
                assert qq == pytest.approx(stats.hypergeom.pmf(0, big_n, tt, n), rel=1e-9, abs=1e-300), (n, m, tt)


def test_data_quality_lattice_pmf_equals_binomial_and_enumeration() -> None:
    """The FFT distribution of sum w_c Z_c: equal weights give w * Binomial(g, q) (scipy), distinct
    weights the brute-force sum over all 2^K outcomes; to 1e-12."""
    w, g, q = 7, 40, 0.3
    pmf = dq._lattice_pmf(np.full(g, w), np.full(g, q))
    assert pmf.size == w * g + 1
    np.testing.assert_allclose(pmf[::w], stats.binom.pmf(np.arange(g + 1), g, q), rtol=1e-9, atol=1e-14)
    assert np.abs(np.delete(pmf, np.arange(0, pmf.size, w))).max() < 1e-14
    rng = np.random.default_rng(41)
    weights = rng.integers(1, 30, 11)
    probs = (0.2 + 0.7 * np.sin(weights) ** 2)  # equal weights share q, as absent_probability gives them
    brute = np.zeros(int(weights.sum()) + 1)
    for z in itertools.product((0, 1), repeat=weights.size):
        zz = np.array(z)
        brute[int(weights @ zz)] += float(np.prod(np.where(zz == 1, probs, 1 - probs)))
    np.testing.assert_allclose(dq._lattice_pmf(weights, probs), brute, rtol=0, atol=1e-13)


def _exact_permutation_p(pooled: list[int], unseen: int, n: int) -> float:
    """P(U >= unseen) over every one of the C(N, n) references (items labelled by category)."""
    labels = np.repeat(np.arange(len(pooled)), pooled)
    t = np.array(pooled)
    hits = total = 0
    for ref in itertools.combinations(range(labels.size), n):
        absent = np.ones(len(pooled), dtype=bool)
        absent[labels[list(ref)]] = False
        hits += int(t[absent].sum()) >= unseen
        total += 1
    return hits / total


def test_data_quality_unseen_p_bounds_the_exact_permutation_p() -> None:
    """Every reference enumerated (N <= 12): unseen_p is never below the exact permutation p-value,
    and equals the loop-based stop-loss bound (1e-9 relative)."""
    rng = np.random.default_rng(42)
    checked = 0
    for _ in range(40):
        k = int(rng.integers(2, 6))
        pooled = rng.multinomial(int(rng.integers(6, 13)), rng.dirichlet(np.ones(k))).tolist()
        pooled = [t for t in pooled if t]
        big_n = sum(pooled)
        n = int(rng.integers(2, big_n - 1))
        for unseen in range(1, big_n - n + 1):
            exact = _exact_permutation_p(pooled, unseen, n)
            got = dq.unseen_p(np.array(pooled), unseen, n)
            assert got >= exact - 1e-12, (pooled, n, unseen, got, exact)
            assert got == pytest.approx(naive_stop_loss_p(pooled, unseen, n), rel=1e-9, abs=1e-12)
            checked += 1
    assert checked > 100


@pytest.mark.parametrize("lattice_max", [1 << 16, 64])  # exact lattice; rounded lattice + Chernoff bound
def test_data_quality_unseen_p_against_monte_carlo_permutations(lattice_max: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Zipf(300) categories, 300-1000 reference values against 10 000, with and without new categories:
    unseen_p is at least the exact permutation p-value estimated from 2 000 multivariate-hypergeometric
    references (minus 4 standard errors), and at most 8 times it (plus 0.02): conservative, not useless."""
    monkeypatch.setattr(dq, "LATTICE_MAX", lattice_max)
    rng = np.random.default_rng(43)
    w = _zipf(300, 1.05)
    for n, new in [(300, 0), (300, 300), (1000, 150), (1000, 400)]:
        m = 10_000
        rc, cc = rng.multinomial(n, w), rng.multinomial(m - new, w)
        pooled = np.r_[rc + cc, [new] if new else []].astype(np.int64)
        unseen = int(cc[rc == 0].sum()) + new
        keep = pooled > 0
        draws = rng.multivariate_hypergeometric(pooled[keep], n, size=2000)
        mc = float(np.mean(((draws == 0) * pooled[keep]).sum(axis=1) >= unseen))
        got = dq.unseen_p(pooled, unseen, n)
        assert got >= mc - 4 * math.sqrt(max(mc * (1 - mc), 1e-3) / 2000), (n, new, got, mc)
        assert got <= 8 * mc + 0.02 or lattice_max < 1 << 16, (n, new, got, mc)


# --------------------------------------------------------------------------- PSI bins on columns with atoms

@pytest.mark.parametrize(("label", "before", "after"), [
    ("flag", lambda r, n: (r.random(n) < 0.30).astype(float), lambda r, n: (r.random(n) < 0.53).astype(float)),
    ("zero-inflated", lambda r, n: np.where(r.random(n) < 0.95, 0.0, r.exponential(1.0, n)),
     lambda r, n: np.where(r.random(n) < 0.50, 0.0, r.exponential(1.0, n))),
    ("three levels", lambda r, n: r.choice([0.0, 1.0, 2.0], n), lambda r, n: r.choice([0.0, 1.0, 2.0], n, p=[0.33, 0.05, 0.62])),
    ("constant", lambda r, n: np.full(n, 3.0), lambda r, n: np.full(n, 7.0)),
])
@pytest.mark.parametrize("name", ["psi", "jensen_shannon", "kl_divergence", "hellinger", "total_variation"])
def test_binned_distances_see_a_change_of_a_column_with_atoms(name: str, label: str, before: Any, after: Any) -> None:
    """A value holding more than a tenth of the reference is a bin of its own: flags, zero-inflated and
    small-integer columns are not merged into one or two bins that can never move (they scored 0)."""
    rng = np.random.default_rng(7)
    ref = NumericReference.from_values(before(rng, 20_000))
    det = Registry().create(name)
    same = NumericCounts.of(before(rng, 5000), ref)
    moved = NumericCounts.of(after(rng, 5000), ref)
    quiet, loud = (det.score(Profile(n_rows=ref.n, numeric={"x": ref}), Profile(n_rows=5000, numeric={"x": c}),
                             context=CTX)[0] for c in (same, moved))
    assert quiet.status == "ok", quiet
    assert loud.status in ("warn", "alert") and loud.value > det.warn, loud
    bins = np.add.reduceat(ref.counts, ref.psi_cuts)
    assert bins.min() > 0 or label == "constant"  # no bin the reference leaves empty, but a constant's sides
