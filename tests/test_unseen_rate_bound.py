"""``data_quality``'s unseen_rate bound with large, almost surely present categories.

The reviewer's case: a 2000-row reference in 4 categories, a 300 000-row window of which 30 % are
never-seen unique values, read 0.30 against a threshold of 0.0105 yet said ok — its p-value 0.014 did
not survive Benjamini–Hochberg.  The lattice path of :func:`detectors.quality.unseen_p` rounds the
90 000 singletons up to a step of 2 (useless there) and its Chernoff bound was fed the 4 categories of
53 000 values whose absence probability is 6e-169: a term :math:`q e^{53000 s}` caps s near 0.007
and with it the bound at 0.014.  They now leave the Chernoff bound through a union bound
(:func:`detectors.quality._split_chernoff_bound`), which gives 2.4e-168 — the exact permutation p
is 2.4e-168 too.

Checked here: (1) through the real profiles (pyarrow tables, ``reference_profile``,
``WindowProfiler``) the reviewer's case and windows all in new values breach; (2) with no change
(large categories, a long tail, rare categories) p <= 0.05 and the detector breaches in at most the
nominal 5 % of seeded runs, on the Chernoff path and on the default one; (3) the bound is never below
the exact permutation p-value, computed independently in rational arithmetic for a reference of k
equal large categories and singletons, and never above the plain Chernoff bound.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from fractions import Fraction

import numpy as np
import pyarrow as pa
import pytest
from scipy import stats

import detectors.quality as dq
from detectors.base import Context
from detectors.profile import CategoricalCounts, CategoricalReference, Profile
from detectors.registry import Registry
from monitor.columns import Columns
from monitor.profiles import WindowProfiler, reference_profile

REGISTRY = Registry()
CTX = Context(model="m", window_start=datetime(2026, 11, 27, 11, tzinfo=UTC),
              window_end=datetime(2026, 11, 27, 12, tzinfo=UTC))
REGIONS = ["north", "south", "east", "west"]
#: the reviewer's model: 5 columns (income, age, score numeric; region, predicted_label categorical)
COLUMNS = Columns(numeric=["income", "age"], categorical=["region"], score="score", prediction="predicted_label")


def _table(n: int, seed: int, region: list[str] | None = None) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "income": rng.normal(50, 10, n), "age": rng.integers(18, 80, n),
        "region": pa.array(region if region is not None else rng.choice(REGIONS, n).tolist()),
        "score": rng.uniform(0, 1, n), "predicted_label": rng.integers(0, 2, n),
    })


def _region_unseen(window_region: list[str]):
    """The ``region`` unseen_rate finding of a default data_quality, the window counted batch by batch."""
    det = REGISTRY.create("data_quality")
    ref = reference_profile(_table(2000, 99), columns=COLUMNS)
    prof = WindowProfiler(reference=ref, columns=COLUMNS)
    for batch in _table(len(window_region), 1, window_region).to_batches(max_chunksize=100_000):
        prof.add(batch)
    findings = det.score(det.summarise(ref), prof.profile, context=CTX)
    assert len(findings) == 13  # BH over 3 x 3 numeric and 2 x 2 categorical findings
    (found,) = [f for f in findings if f.target == "region" and f.statistic == "unseen_rate"]
    return found


# --------------------------------------------------------------------------- (1) the reviewer's case, end to end

def test_thirty_percent_new_values_in_a_300k_window_breach() -> None:
    """30 % of 300 000 window rows in unseen unique values: p was 0.014 (ok after BH), now < 1e-100 (alert).
    The plain Chernoff bound on the same pooled counts is still the old 0.014: the case is the defect's."""
    n, k = 300_000, 90_000
    region = np.random.default_rng(0).choice(REGIONS, n).astype(object)
    region[:k] = [f"new-{i}" for i in range(k)]
    f = _region_unseen(region.tolist())
    assert f.value == pytest.approx(0.3)
    assert f.p_value < 1e-100
    assert f.status == "alert"
    pooled = np.array([53_000] * 4 + [1] * k)  # about the pooled counts of this case
    q = dq.absent_probability(pooled, 2000)
    assert dq._chernoff_bound(pooled, q, float(k)) > 0.01  # the bound that hid it
    assert dq.unseen_p(pooled, k, 2000) < 1e-160


def test_a_300k_window_all_in_new_values_breaches() -> None:
    """Every one of 300 000 window values a new unique one: p 2.7e-6, alert (the exact permutation p is
    1.6e-6; for 1 000 000 rows see test_unseen_p_is_not_below_the_exact_permutation_p)."""
    f = _region_unseen([f"id-{i}" for i in range(300_000)])
    assert f.value == 1.0
    assert f.p_value < 1e-5
    assert f.status == "alert"


# --------------------------------------------------------------------------- (2) no change: at most the nominal rate

def _zipf(k: int, a: float) -> np.ndarray:
    w = 1.0 / np.arange(1, k + 1) ** a
    return w / w.sum()


NULLS = {
    # a few large categories (almost surely present) and a long Zipf tail
    "large+tail": np.r_[np.full(4, 0.2), 0.2 * _zipf(3000, 1.0)],
    # a long tail alone: singletons, and unseen values, without any change
    "long tail": _zipf(5000, 1.05),
    # three large categories and 3000 rare ones (0.2 expected reference values each)
    "large+rare": np.r_[np.full(3, 0.7 / 3), np.full(3000, 0.3 / 3000)],
}
NULL_TRIALS = 150
NULL_ALLOWED = int(stats.binom.ppf(0.99, NULL_TRIALS, 0.05))  # 14 of 150


def _null_run(rng: np.random.Generator, p: np.ndarray, n: int, m: int) -> tuple[bool, float]:
    """One no-change run through the detector: (breach, p-value).  ``warn`` and ``alert`` are all but 0 and
    there is no correction, so the status is decided by the p-value alone at the nominal 5 %."""
    det = REGISTRY.create("data_quality", warn=1e-9, alert=1e-9, correction="none", alpha=0.05)
    names = [f"c{i}" for i in range(p.size)]
    rc, cc = rng.multinomial(n, p), rng.multinomial(m, p)
    reference = {c: int(v) for c, v in zip(names, rc, strict=True) if v}
    window = {c: int(v) for c, v in zip(names, cc, strict=True) if v}
    ref = Profile(n_rows=n, categorical={"c": CategoricalReference.from_counts(CategoricalCounts(counts=reference))})
    cur = Profile(n_rows=m, categorical={"c": CategoricalCounts(counts=window)})
    (f,) = [f for f in det.score(det.summarise(ref), cur, context=CTX) if f.statistic == "unseen_rate"]
    return f.status != "ok", float(f.p_value)


@pytest.mark.parametrize("kind", list(NULLS))
def test_null_breach_rate_on_the_chernoff_path(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """No change, 2000 reference values against 30 000, the lattice capped at 64 points so that the split
    Chernoff bound decides alone: at most 14 of 150 seeded runs breach (binomial 99 % quantile at 5 %),
    and as many have p <= 0.05."""
    monkeypatch.setattr(dq, "LATTICE_MAX", 64)
    rng = np.random.default_rng(7_000 + len(kind))
    runs = [_null_run(rng, NULLS[kind], 2000, 30_000) for _ in range(NULL_TRIALS)]
    breaches = sum(b for b, _ in runs)
    small = sum(p <= 0.05 for _, p in runs)
    assert breaches <= NULL_ALLOWED and small <= NULL_ALLOWED, (kind, breaches, small)


def test_null_breach_rate_on_the_default_path_with_a_large_window() -> None:
    """No change, 2000 reference values against 300 000 (3 large categories and 3000 rare ones, the
    rare ones 90 000 values: the lattice is rounded and the split Chernoff bound taken too): at most
    the nominal rate of 60 runs breach (binomial 99 % quantile: 7), and as many have p <= 0.05."""
    trials = 60
    rng = np.random.default_rng(7_100)
    runs = [_null_run(rng, NULLS["large+rare"], 2000, 300_000) for _ in range(trials)]
    allowed = int(stats.binom.ppf(0.99, trials, 0.05))
    assert sum(b for b, _ in runs) <= allowed
    assert sum(p <= 0.05 for _, p in runs) <= allowed


# --------------------------------------------------------------------------- (3) independent checks

def _exact_p_large_and_singletons(k: int, size: int, singletons: int, n: int, u: int) -> float:
    r"""Exact permutation p-value :math:`P(U \ge u)` for pooled counts of k categories of ``size`` values and
    ``singletons`` categories of one, the reference a uniformly random n of the N values.

    With A of the large categories absent and X reference values among the present ones, the reference
    holds n - X singletons and :math:`U = (S - n + X) + A \cdot size`.  Given that a chosen set of a large
    categories is absent and the other k - a present, the ways to take x values from the present ones
    with each hit are :math:`\sum_j (-1)^j \binom{k-a}{j} \binom{(k-a-j) size}{x}` (inclusion–exclusion).
    Where :math:`U \ge u` holds for every x, :math:`P(A = a)` is summed instead, by inclusion–exclusion
    over :math:`\binom{N - i \cdot size}{n}`.  Integers and fractions throughout."""
    big_n = k * size + singletons
    total = math.comb(big_n, n)
    need = n - singletons + u  # U >= u  <=>  X + a * size >= need
    p = Fraction(0)
    for a in range(k + 1):
        lo = max(need - a * size, 0)
        present = k - a
        if lo <= present:  # every x a configuration allows (x >= present) satisfies it: P(A = a)
            ways = sum((-1) ** j * math.comb(present, j) * math.comb(big_n - (a + j) * size, n)
                       for j in range(present + 1))
            p += Fraction(math.comb(k, a) * ways, total)
            continue
        for x in range(lo, min(n, present * size) + 1):
            inside = sum((-1) ** j * math.comb(present, j) * math.comb((present - j) * size, x)
                         for j in range(present + 1))
            p += Fraction(math.comb(k, a) * inside * math.comb(singletons, n - x), total)
    return float(p)


def test_exact_oracle_against_monte_carlo() -> None:
    """The oracle below agrees with a Monte Carlo of 200 000 random references on a small case."""
    k, size, singletons, n = 2, 6, 20, 10
    pooled = np.array([size] * k + [1] * singletons)
    rng = np.random.default_rng(3)
    draws = rng.multivariate_hypergeometric(pooled, n, size=200_000)
    unseen = ((draws == 0) * pooled).sum(axis=1)
    for u in (16, 18, 20, 22):
        mc = float(np.mean(unseen >= u))
        exact = _exact_p_large_and_singletons(k, size, singletons, n, u)
        assert exact == pytest.approx(mc, abs=4 * math.sqrt(max(mc * (1 - mc), 1e-5) / 200_000)), (u, exact, mc)


CASES = [  # (k, size, singletons, n, u)
    (4, 53_000, 90_000, 2000, 90_000),        # the reviewer's case: 30 % new in 300 000
    (4, 500, 300_000, 2000, 300_000),         # a 300 000-row window all new
    (4, 500, 1_000_000, 2000, 1_000_000),     # a 1 000 000-row window all new
    (5, 60, 2700, 300, 2440),                 # large categories with q = 0.0017: the split matters
    (5, 60, 2700, 300, 2460),
    (5, 60, 2700, 300, 2475),
    (3, 80, 2000, 250, 1870),
    (2, 40, 600, 100, 520),
]


@pytest.mark.parametrize("lattice_max", [dq.LATTICE_MAX, 64])  # default; the Chernoff bound alone
def test_unseen_p_is_not_below_the_exact_permutation_p(lattice_max: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """unseen_p >= the exact permutation p on every case.  The reviewer's case is nearly tight (2.35e-168
    against 2.35e-168: the chance that one of the 4 large categories is absent).  A window of 1 000 000 rows
    all new has an exact p of 0.018 (the reference happens to be 2000 singletons and the 4 categories
    absent): no valid bound on this statistic can breach there once BH spreads 0.05 over 13 findings."""
    monkeypatch.setattr(dq, "LATTICE_MAX", lattice_max)
    for k, size, singletons, n, u in CASES:
        pooled = np.array([size] * k + [1] * singletons)
        exact = _exact_p_large_and_singletons(k, size, singletons, n, u)
        got = dq.unseen_p(pooled, u, n)
        assert got >= exact * (1 - 1e-9), (k, size, singletons, n, u, got, exact)
        if (k, size, u) == (4, 53_000, 90_000):
            assert 1e-170 < exact < 1e-166 and got <= 1.001 * exact
        if singletons == 1_000_000:
            assert 0.018 < exact < got < 0.03


def test_split_bound_is_the_plain_chernoff_bound_or_below() -> None:
    """_split_chernoff_bound <= _chernoff_bound always (B = ∅ is a candidate), equal when no category has
    q <= 0.01 (no other candidate), and on the CASES where the large categories capped the plain bound
    it is lower by orders of magnitude."""
    rng = np.random.default_rng(11)
    for _ in range(60):
        pooled = np.r_[rng.integers(1, 4, int(rng.integers(50, 400))), rng.integers(20, 300, int(rng.integers(0, 6)))]
        n = int(rng.integers(20, pooled.sum() // 3))
        q = dq.absent_probability(pooled, n)
        live = (q > 0) & (q < 1 - dq.NEGLIGIBLE)
        t, q = pooled[live], q[live]
        mean = float((t * q).sum())
        for v in (mean + 1, mean + 0.1 * (t.sum() - mean), mean + 0.5 * (t.sum() - mean)):
            plain, split = dq._chernoff_bound(t, q, float(v)), dq._split_chernoff_bound(t, q, float(v))
            assert split <= plain * (1 + 1e-9) + 1e-300
            if q.min() > 0.01:
                assert split == pytest.approx(plain, rel=1e-9, abs=1e-300)
    for k, size, singletons, n, u in [(4, 53_000, 90_000, 2000, 90_000), (5, 60, 2700, 300, 2475)]:
        pooled = np.array([size] * k + [1] * singletons)
        q = dq.absent_probability(pooled, n)
        assert dq._split_chernoff_bound(pooled, q, float(u)) < 0.3 * dq._chernoff_bound(pooled, q, float(u))
