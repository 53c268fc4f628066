"""The tie-aware p-value of ``ks`` (``ks_p_value``, ``ks_tied_sf`` in detectors/drift_numeric.py).

Kolmogorov's law is the sup of a Brownian bridge over all of [0, 1]; when the pooled sample ties (a
flag, a count, a mostly-zero or rounded column) D is a max over the few pooled CDF values the data
reach, and that law was so conservative that ``ks`` hardly ever fired on such columns (a flag from
10 % to 17 % of 300 rows: p 0.12).  Here, against:

* a naive implementation of the same recursion in plain loops (what the conformance suite checks the
  vectorised kernel with), closed forms and Kolmogorov's law;
* permutation p-values (20 000 seeded draws of the reference's share of the pooled counts);
* no-change trials (rejection rate at alpha 0.05) and the flag that used to pass unseen;
* today's numbers on continuous data, to 1e-12.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime

import numpy as np
import pytest
from scipy import special, stats

from detectors.base import Batch, Context, Detector, Finding, batch_extras
from detectors.drift_numeric import KS_LIMIT_N, KS_TIE_STEP, ks_binned, ks_p_value, ks_tied_sf
from detectors.profile import NumericCounts, NumericReference, Profile
from detectors.permutation import MAX_DRAWS, needs_permutation, permutation_p_values
from detectors.registry import Registry

REGISTRY = Registry()
CTX = Context(model="ties", window_start=datetime(2026, 1, 1, tzinfo=UTC),
              window_end=datetime(2026, 1, 1, 1, tzinfo=UTC))


# --------------------------------------------------------------------------- the naive recursion

def _phi(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def _miss(u: float, v: float, tau: float, x: float) -> float:
    """P(a Brownian bridge from u to v over tau leaves (-x, x)): the image sum, term by term."""
    w = 2.0 * x
    if w * w < 0.135 * tau:  # a corridor this narrow for the time: staying in is under 4e-16
        return 1.0
    total = math.exp(-2.0 * (x - u) * (x - v) / tau)
    k = 1
    while True:
        kw = k * w
        terms = (math.exp(-2.0 * (x - u + kw) * (x - v + kw) / tau) + math.exp(-2.0 * (x - u - kw) * (x - v - kw) / tau)
                 - math.exp(-2.0 * kw * (kw - (v - u)) / tau) - math.exp(-2.0 * kw * (kw + (v - u)) / tau))
        total += terms
        if 2.0 * k * k * w * w / tau > 37.0:
            return min(1.0, max(0.0, total))
        k += 1


def naive_ks_tied_sf(x: float, pooled: Sequence[float]) -> float:
    """:func:`ks_tied_sf` restated with loops over points and nodes: the same points, nodes and
    steps (see its docstring), none of the batching by shape, no vector of tails."""
    h = [float(c) for c in pooled if c > 0]
    if not x > 0 or len(h) < 2:
        return 1.0
    big_n = sum(h)
    big = [c > KS_TIE_STEP * big_n for c in h]
    points = [i for i in range(len(h) - 1) if big[i] or big[i + 1]]
    ends = [-1, *points, len(h) - 1]
    watched = [ends[j + 1] - ends[j] > 1 for j in range(len(ends) - 1)]
    cum, run = [], 0.0
    for c in h:
        run += c
        cum.append(run)
    t = [0.0] + [cum[i] / big_n for i in points] + [1.0]
    s = [1.0] + [(big_n - cum[i]) / big_n for i in points] + [0.0]
    last = len(t) - 2
    bound = sum(2.0 * _phi(-x / math.sqrt(t[j] * s[j])) for j in range(1, last + 1))
    bound += 2.0 * sum(watched) * math.exp(-2.0 * x * x)
    if bound < 1e-6 or (last == 1 and not any(watched)):
        return bound
    sizes = (16, 24, 32, 48, 64)
    tau = [t[j + 1] - t[j] for j in range(last + 1)]
    a = [s[j + 1] / s[j] for j in range(last)]
    sigma = [math.sqrt(tau[j] * a[j]) for j in range(last)]
    reach = [min(x, 7.0 * math.sqrt(t[j] * s[j])) for j in range(last + 1)]
    carried = [sigma[j] < 0.25 * math.pi / sizes[-1] * reach[j + 1] for j in range(last)]
    nodes, weights = [[0.0]], [[1.0]]
    for j in range(last):
        if carried[j]:
            nodes.append([a[j] * u for u in nodes[j]])
            weights.append(weights[j])
            continue
        width, shrink = sigma[j], 1.0
        for k in range(j + 1, last):
            if not carried[k]:
                width = min(width, sigma[k] / (a[k] * shrink))
                break
            shrink *= a[k]
        need = math.pi * reach[j + 1] / width
        size = next((g for g in sizes if g >= need), sizes[-1])
        z, wz = np.polynomial.legendre.leggauss(size)
        nodes.append([reach[j + 1] * float(v) for v in z])
        weights.append([reach[j + 1] * float(v) for v in wz])
    mass, leave = [1.0], 0.0
    for j in range(last):
        sd = sigma[j]
        outs = [_phi((-x - a[j] * u) / sd) + _phi((a[j] * u - x) / sd) for u in nodes[j]]
        if carried[j]:
            outs = [min(1.0, 2.0 * o) if watched[j] else o for o in outs]
            leave += sum(o * mm for o, mm in zip(outs, mass, strict=True))
            mass = [mm * (1.0 - o) for o, mm in zip(outs, mass, strict=True)]
            continue
        half = reach[j + 1]
        new = [0.0] * len(nodes[j + 1])
        for u, o, mm in zip(nodes[j], outs, mass, strict=True):
            leave += o * mm
            inside = _phi((half - a[j] * u) / sd) - _phi((-half - a[j] * u) / sd)
            column = [math.exp(-0.5 * ((v - a[j] * u) / sd) ** 2) for v in nodes[j + 1]]
            got = sum(wv * k for wv, k in zip(weights[j + 1], column, strict=True))
            scale = inside / max(got, 1e-300)
            for i, (v, wv, k) in enumerate(zip(nodes[j + 1], weights[j + 1], column, strict=True)):
                keep = k * scale
                if watched[j]:
                    gone = keep * _miss(u, v, tau[j], x)
                    leave += wv * gone * mm
                    keep -= gone
                new[i] += wv * keep * mm
        mass = new
    if watched[last]:
        leave += sum(mm * _miss(u, 0.0, tau[last], x) for u, mm in zip(nodes[last], mass, strict=True))
    return min(1.0, max(1e-6, leave))


def _poisson_counts(lam: float, n: int) -> np.ndarray:
    return np.bincount(np.random.default_rng(1).poisson(lam, n)).astype(float)


#: pooled counts exercising every kind of step: single points, watched runs (a tail, a continuous part,
#: out-of-range values), a lone rare value between atoms (a carried step), many atoms
POOLED = {
    "flag": np.array([900.0, 100.0]),
    "poisson": _poisson_counts(1.0, 5000),
    "poisson, out of range both ends": np.concatenate([[2.0], _poisson_counts(2.2, 520), [5.0]]),
    "zeros then continuous": np.concatenate([[900.0], np.ones(100)]),
    "continuous, cap, continuous": np.concatenate([np.ones(200), [400.0], np.ones(400)]),
    "rare value between atoms": np.array([4000.0, 1.0, 4000.0, 1999.0]),
    "30 atoms": np.arange(1.0, 31.0),
}


@pytest.mark.parametrize("name", list(POOLED))
@pytest.mark.parametrize("x", [0.05, 0.4, 0.9, 1.36, 2.0, 3.5])
def test_kernel_equals_naive_loops(name: str, x: float) -> None:
    got, want = ks_tied_sf(x, pooled=POOLED[name]), naive_ks_tied_sf(x, POOLED[name].tolist())
    assert got == pytest.approx(want, rel=1e-9, abs=1e-15), (name, x)


@pytest.mark.parametrize("share", [0.03, 0.1, 0.5, 0.93])
@pytest.mark.parametrize("x", [0.3, 1.0, 2.0, 4.0])
def test_one_point_is_the_normal_tail(share: float, x: float) -> None:
    """A flag: D is taken at one pooled CDF value t, and B(t) ~ N(0, t(1-t))."""
    want = 2 * stats.norm.sf(x / math.sqrt(share * (1 - share)))
    assert ks_tied_sf(x, pooled=np.array([share, 1 - share])) == pytest.approx(want, rel=1e-10)


def test_no_step_over_one_percent_is_kolmogorovs_law() -> None:
    for x in np.linspace(0.2, 3.0, 29):
        assert ks_tied_sf(float(x), pooled=np.ones(400)) == pytest.approx(special.kolmogorov(x), abs=1e-12)


@pytest.mark.parametrize("name", list(POOLED))
def test_reversed_values_give_the_same_law(name: str) -> None:
    """B(1 - t) is a Brownian bridge too, so the values in reverse order give the same p-value — through
    other code: a run watched up to a point (a kernel times the image sum) becomes one watched from it,
    or the last run to t = 1 (the image sum alone), and the nodes differ.  Measured: within 4e-7, but
    2e-4 for the lone bin of 1e-4 between two atoms (a step too short for the nodes: approximate)."""
    rel = 1e-3 if name == "rare value between atoms" else 1e-6
    for x in (0.6, 1.2, 1.8, 2.5):
        p = ks_tied_sf(x, pooled=POOLED[name])
        assert ks_tied_sf(x, pooled=POOLED[name][::-1]) == pytest.approx(p, rel=rel), (name, x)


# --------------------------------------------------------------------------- against permutations

def _permutation(x: np.ndarray, y: np.ndarray, *, draws: int = 20_000, seed: int = 0
                 ) -> tuple[float, float, float, np.ndarray]:
    """D, the permutation law's P(D > d) and P(D >= d), and the pooled counts of the distinct values.

    A permutation of the pooled sample gives the reference a multivariate hypergeometric share of the
    pooled counts; D is computed from those counts in integers (D * n * m), so ties in D are exact."""
    values, where, counts = np.unique(np.concatenate([x, y]), return_inverse=True, return_counts=True)
    n, m = x.size, y.size
    total = np.cumsum(counts)

    def dnm(ref_counts: np.ndarray) -> np.ndarray:
        c = np.cumsum(ref_counts, axis=-1)
        return np.max(np.abs(c * m - (total - c) * n), axis=-1)

    d = dnm(np.bincount(where[:n], minlength=values.size))
    shuffled = dnm(np.random.default_rng(seed).multivariate_hypergeometric(counts, n, size=draws))
    return float(d / (n * m)), float(np.mean(shuffled > d)), float(np.mean(shuffled >= d)), counts


def _flag(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    return (rng.random(n) < share).astype(float)


def _zeros(rng: np.random.Generator, n: int, share: float) -> np.ndarray:
    return np.where(rng.random(n) < share, 0.0, rng.lognormal(size=n))


def _oracle_cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(2026)
    return {
        "flag 10 % vs 10 %": (_flag(rng, 2000, 0.1), _flag(rng, 300, 0.1)),
        "flag 10 % vs 13 %": (_flag(rng, 2000, 0.1), _flag(rng, 300, 0.13)),
        "flag 10 % vs 14 %": (_flag(rng, 2000, 0.1), _flag(rng, 300, 0.14)),
        "poisson 1 vs 1": (rng.poisson(1.0, 2000).astype(float), rng.poisson(1.0, 500).astype(float)),
        "poisson 1 vs 1.12": (rng.poisson(1.0, 2000).astype(float), rng.poisson(1.12, 500).astype(float)),
        "five values": (rng.integers(0, 5, 1000).astype(float), rng.integers(0, 5, 400).astype(float)),
        "five values, 8 % moved up": (rng.integers(0, 5, 1000).astype(float),
                                      np.minimum(rng.integers(0, 5, 400) + (rng.random(400) < 0.08), 4).astype(float)),
        "90 % zeros": (_zeros(rng, 2000, 0.9), _zeros(rng, 300, 0.9)),
        "90 % zeros vs 87 %": (_zeros(rng, 2000, 0.9), _zeros(rng, 300, 0.87)),
        "normal rounded to 0.5": (np.round(rng.normal(size=1500) * 2) / 2, np.round(rng.normal(0.1, size=600) * 2) / 2),
    }


ORACLE = _oracle_cases()


@pytest.mark.parametrize("name", list(ORACLE))
def test_p_value_agrees_with_permutations(name: str) -> None:
    """Measured (D, permutation [P(D > d), P(D >= d)], tie-aware p, the old continuous p):

    ==========================  ======  ================  ======  ======
    flag 10 % vs 10 %           0.0010  [0.920, 1.000]    0.957   1.000
    flag 10 % vs 13 %           0.0280  [0.119, 0.145]    0.124   0.983
    flag 10 % vs 14 %           0.0393  [0.031, 0.041]    0.034   0.799
    poisson 1 vs 1              0.0265  [0.394, 0.430]    0.430   0.934
    poisson 1 vs 1.12           0.0730  [0.0040, 0.0044]  0.0033  0.027
    five values                 0.0460  [0.219, 0.232]    0.234   0.565
    five values, 8 % moved up   0.0485  [0.195, 0.207]    0.200   0.496
    90 % zeros                  0.0265  [0.282, 0.287]    0.313   0.991
    90 % zeros vs 87 %          0.0622  [0.0022, 0.0023]  0.0022  0.255
    normal rounded to 0.5       0.0487  [0.086, 0.087]    0.087   0.253
    ==========================  ======  ================  ======  ======

    D is discrete, so the permutation law has an atom at d: the asymptotic p-value falls between
    P(D > d) and P(D >= d) (it tracks the mid-p), up to the Monte-Carlo error (3 standard errors of
    20 000 draws) and the asymptotic approximation (allowed 10 % of P(D >= d): the normal tail is a
    little light far out — 0.0033 against 0.0040 — and a continuous part, watched throughout, makes it
    a little heavy — 0.313 against 0.287).  The binned detector (atoms are grid bins of their own) gives
    the same D and p on the discrete columns; with a continuous part its D is within 1e-3 (below) and
    its p no smaller.
    """
    x, y = ORACLE[name]
    d, above, at_least, counts = _permutation(x, y)
    p = ks_p_value(d, n_reference=x.size, n_current=y.size, pooled=counts)
    slack = 3 * math.sqrt(at_least * (1 - at_least) / 20_000) + 0.1 * at_least
    assert above - slack <= p <= at_least + slack, (d, above, at_least, p)
    ref = NumericReference.from_values(x)
    cur = NumericCounts.of(y, ref)
    s = REGISTRY.create("ks").statistic(ref, cur)
    if "zeros" in name:  # a continuous part: binned D within 1e-3 of the exact one
        assert d - 1e-3 <= s.value <= d
    else:
        assert s.value == pytest.approx(d, abs=1e-12)
    if not needs_permutation(ref.counts, cur.counts):
        assert s.p_value == pytest.approx(p, rel=1e-9) if "zeros" not in name else s.p_value >= p
        return
    # some 30 values outside the dominant one (the flags, 90 % zeros): the detector's p-value is the
    # permutation law's P(D >= d) itself, estimated by sequential Monte Carlo; a finer estimate of the same
    # (20 000 draws) is within 4 standard errors of both estimates of the oracle's, plus 10 % where the binned D
    # is not the exact one.  Measured: 1.000/1.000, 0.139/0.145, 0.038/0.041, 0.296/0.287, 0.0016/0.0023.
    assert s.p_value == permutation_p_values(ref.counts, cur.counts)["ks"] and "permutation p-value" in s.note
    fine = permutation_p_values(ref.counts, cur.counts, stop_after=2000, max_draws=20_000)["ks"]
    se = math.sqrt(2 * at_least * (1 - at_least) / 20_000)
    assert abs(fine - at_least) <= 4 * se + (0.1 * at_least if "zeros" in name else 0.0), (fine, at_least)


# --------------------------------------------------------------------------- no change: calibrated

def _null_rates(draw, *, trials: int, seed: int) -> tuple[float, float]:
    """Rejection rates at 0.05 of the tie-aware and the continuous p-value, reference 2 000 rows, window 300."""
    rng = np.random.default_rng(seed)
    det = REGISTRY.create("ks")
    tied = continuous = 0
    for _ in range(trials):
        ref = NumericReference.from_values(draw(rng, 2000))
        cur = NumericCounts.of(draw(rng, 300), ref)
        s = det.statistic(ref, cur)
        tied += s.p_value <= 0.05
        continuous += ks_p_value(s.value, n_reference=ref.n, n_current=cur.n_finite) <= 0.05
    return tied / trials, continuous / trials


NULL_TRIALS = 2000
NULL_COLUMNS = {
    "flag 10 %": lambda rng, n: _flag(rng, n, 0.1),
    "poisson 1": lambda rng, n: rng.poisson(1.0, n).astype(float),
    "90 % zeros": lambda rng, n: _zeros(rng, n, 0.9),
}


@pytest.mark.parametrize("name", list(NULL_COLUMNS))
def test_no_change_rejects_five_percent(name: str) -> None:
    """2 000 seeded no-change trials per column (reference 2 000 rows, window 300): one standard error of
    a 5 % rate is 0.49 points, and the rate must be within 3 of them (3.5-6.5 %).  These windows hold
    30 (flag, 90 % zeros) and 190 (Poisson) values outside the commonest one, effective sizes under 300,
    so the detector's p-values are permutation ones (detectors/permutation.py).  Measured: flag 4.7 %,
    poisson 4.75 %, 90 % zeros 5.7 % (the continuous law: 0.0 %, 0.55 %, 0.0 %).  With the tie-aware
    law itself (before permutations were used) the same trials measured 5.25 %, 4.95 %, 4.80 %, and,
    the same way on these three and five equally likely values, reference/window 2 000/300, 5 000/150
    and 1 000/1 000: 4.25-5.8 % of 2 000 trials each; 8 000 trials each of five values at 2 000/300 and
    5 000/100 and of the flag at 5 000/150 and 5 000/100: 4.7-5.2 % (one standard error 0.24)."""
    tied, continuous = _null_rates(NULL_COLUMNS[name], trials=NULL_TRIALS, seed=1)
    se = math.sqrt(0.05 * 0.95 / NULL_TRIALS)
    assert abs(tied - 0.05) <= 3 * se, (tied, continuous)
    assert continuous < tied


# --------------------------------------------------------------------------- the flag that passed unseen

FLAG_REF = np.repeat([0.0, 1.0], [4500, 500])     # 10 % of 5 000
FLAG_CUR = np.repeat([0.0, 1.0], [249, 51])       # 17 % of 300


def test_flag_from_10_to_17_percent_is_significant_now() -> None:
    """D 0.07; the continuous law gave p 0.119 (README's 0.12), the tie-aware one the two-proportion
    z-test's 1.1e-4: D taken at one pooled CDF value t = 4 749/5 300, B(t) ~ N(0, t(1-t)).  The window
    holds 51 ones (effective size 30), so the detector takes the permutation p-value, whose exact value is
    a hypergeometric tail (D >= 0.07 where the window holds 51 or more ones, or 7 or fewer): 2.2e-4.  Its
    Monte Carlo estimate (g + 1)/2 001 after 2 000 draws (g of them reaching D, Binomial(2 000, 2.2e-4))
    is 3/2 001 on these counts; anything up to the binomial's 1 - 1e-6 quantile is accepted."""
    old = ks_p_value(0.07, n_reference=5000, n_current=300)
    assert old == pytest.approx(stats.ks_2samp(FLAG_REF, FLAG_CUR, method="asymp").pvalue, rel=1e-9)
    assert 0.11 < old < 0.13
    ref = NumericReference.from_values(FLAG_REF)
    cur = NumericCounts.of(FLAG_CUR, ref)
    s = REGISTRY.create("ks").statistic(ref, cur)
    assert s.value == pytest.approx(0.07, abs=1e-12)
    en, big_n, t = 5000 * 300 / 5300, 5300, 4749 / 5300
    z = 0.07 * math.sqrt(en * (big_n - 1) / big_n) / math.sqrt(t * (1 - t))
    tied = ks_p_value(0.07, n_reference=5000, n_current=300, pooled=ref.counts + cur.counts)
    assert tied == pytest.approx(2 * stats.norm.sf(z), rel=1e-10) and tied < 2e-4
    ones = stats.hypergeom(5300, 551, 300)
    d_of = np.abs(np.arange(301) / 300 - (551 - np.arange(301)) / 5000)  # D for k ones in the window
    exact = float(ones.pmf(np.arange(301))[d_of >= 0.07 - 1e-12].sum())
    assert 2e-4 < exact < 2.5e-4
    most = stats.binom.ppf(1 - 1e-6, MAX_DRAWS, exact)
    assert 1 / (MAX_DRAWS + 1) <= s.p_value <= (most + 1) / (MAX_DRAWS + 1) and "permutation p-value" in s.note


def _batch(values: np.ndarray) -> Batch:
    return Batch(n_rows=values.size, numeric={"flag": values}, categorical={}, sensitive={},
                 timestamp=np.zeros(values.size, np.int64))


def _score(det: Detector, ref: np.ndarray, windows: Sequence[np.ndarray]) -> Finding:
    """One finding the way the daemon's profiler gets it: the reference once, the window batch by batch."""
    ref_batch = _batch(ref)
    r = NumericReference.from_values(ref)
    summary = Profile(n_rows=ref.size, numeric={"flag": r}, roles={"flag": "feature"},
                      extras={det.key: det.reference_extra(ref_batch)} if det.uses_batches else {})
    current = Profile(n_rows=0, numeric={"flag": NumericCounts.empty(r)}, roles={"flag": "feature"})
    for w in windows:
        current = current.merge(Profile(n_rows=w.size, numeric={"flag": NumericCounts.of(w, r)},
                                        extras=batch_extras([det], summary.extras, _batch(w))))
    (f,) = det.score(det.summarise(summary), current, context=CTX)
    return f


@pytest.mark.parametrize("exact", [False, True])
def test_detector_fires_on_the_flag(exact: bool) -> None:
    """Through the registry, binned and ``exact: true``, the window in three batches.  Before, p 0.119
    left the flag ``ok`` whatever the thresholds; now D 0.07 passes ``warn`` (0.06) at the defaults, and
    ``alert`` where the alert threshold is 0.06."""
    from detectors.decision import classify

    old = ks_p_value(0.07, n_reference=5000, n_current=300)
    windows = np.array_split(np.random.default_rng(5).permutation(FLAG_CUR), 3)
    default = _score(REGISTRY.create("ks", exact=exact), FLAG_REF, windows)
    assert classify(0.07, p_adjusted=old, warn=0.06, alert=0.15, alpha=0.05)[0] == "ok"
    assert (default.value, default.status) == (pytest.approx(0.07), "warn"), default
    tight = _score(REGISTRY.create("ks", exact=exact, warn=0.03, alert=0.06), FLAG_REF, windows)
    assert classify(0.07, p_adjusted=old, warn=0.03, alert=0.06, alpha=0.05)[0] == "ok"
    assert tight.status == "alert", tight
    # 51 ones, an effective size of 30: the permutation p-value (exact 2.2e-4; see the test above), the same
    # on the grid and on the raw values: the same counts (bins empty on both sides aside) give the same draws
    ref = NumericReference.from_values(FLAG_REF)
    want = permutation_p_values(ref.counts, NumericCounts.of(FLAG_CUR, ref).counts)["ks"]
    assert tight.p_value == default.p_value == want < 0.005
    assert (tight.note or "").startswith("exact; permutation p-value") == exact
    assert "permutation p-value" in (tight.note or "")


# --------------------------------------------------------------------------- continuous data: today's numbers

@pytest.mark.parametrize(("n_ref", "n_cur"), [(5000, 400), (2000, 2000), (50_000, 25_000)])
def test_continuous_columns_keep_todays_p_value(n_ref: int, n_cur: int) -> None:
    """No pooled bin holds over 1 %: the binned p-value is scipy's ``kstwo`` at round(n_eff) (as
    ``ks_2samp(method="asymp")``), Kolmogorov's law above n_eff 10 000; ``exact`` is ``ks_2samp``'s own."""
    rng = np.random.default_rng(n_ref + n_cur)
    x, y = rng.normal(size=n_ref), rng.normal(0.05, size=n_cur)
    ref = NumericReference.from_values(x)
    cur = NumericCounts.of(y, ref)
    pooled = ref.counts + cur.counts
    assert pooled.max() <= KS_TIE_STEP * pooled.sum()
    s = REGISTRY.create("ks").statistic(ref, cur)
    d = ks_binned(ref.counts, cur.counts)
    en = n_ref * n_cur / (n_ref + n_cur)
    today = special.kolmogorov(math.sqrt(en) * d) if en > KS_LIMIT_N else stats.kstwo.sf(d, round(en))
    assert s.value == d
    assert s.p_value == pytest.approx(today, rel=1e-12, abs=1e-12)
    assert ks_p_value(d, n_reference=n_ref, n_current=n_cur, pooled=pooled) == ks_p_value(
        d, n_reference=n_ref, n_current=n_cur)
    if n_ref <= 5000:
        f = _score(REGISTRY.create("ks", exact=True), x, [y])
        want = stats.ks_2samp(x, y)
        assert (f.value, f.p_value, f.note) == (pytest.approx(want.statistic, abs=1e-15),
                                                pytest.approx(want.pvalue, rel=1e-12, abs=1e-15), "exact")


# --------------------------------------------------------------------------- monotone in D

def test_p_value_never_increases_with_x() -> None:
    """Where the union bound falls under 1e-6 it replaces the recursion, which was then often far below
    it: 30 atoms gave p 2.1e-7 at x 2.712 and 9.9e-7 at x 2.721, and 30 atoms among 970 rare values
    3.4e-8 at x 2.972 then 1.0e-6 at 2.980 — a larger D, a p-value up to 30 times larger."""
    rng = np.random.default_rng(1)
    mixed = np.ones(1000)
    mixed[rng.choice(1000, 30, replace=False)] = rng.uniform(10, 40, 30)
    for name, pooled in [*POOLED.items(), ("30 atoms among rare values", mixed)]:
        p = np.array([ks_tied_sf(float(x), pooled=pooled) for x in np.linspace(1.5, 4.0, 300)])
        assert np.all(np.diff(p) <= 1e-15), (name, float(np.max(np.diff(p))))
