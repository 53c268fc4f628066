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
across all of the detector's findings in the run.  The reference is a
sample too, so every test puts the reference's own sampling noise in its
null distribution (the baselines above are estimates and only set the
effect thresholds):

* missing and inf: Fisher's exact test of two rates — given the k events
  of both samples together, the window's count is
  Hypergeometric(n + m, k, m) when nothing changed (:func:`rate_increase_p`);
* out of range: under no change the n reference and m window values are
  exchangeable, and the count K of window values outside the reference's
  [min, max] has an exact distribution, BetaBinomial(m, 2, n − 1) — its
  mean is the baseline m·2/(n+1) — whatever the data's distribution
  (:func:`out_of_range_p`; ties only make K smaller, so the test stays
  valid on discrete data);
* unseen: given the pooled count of every category, the reference is a
  random n of the n + m values; the unseen count is a sum of negatively
  associated category indicators, bounded above in convex order by its
  independent version, which gives a valid (conservative) p-value for any
  distribution and any sample sizes (:func:`unseen_p`; the reference's
  large, almost surely present categories leave its Chernoff part through
  a union bound, :func:`_split_chernoff_bound`).

With the old tests — binomials around the baselines as if they were exact
— identical distributions breached in 18 % of runs (N(0, 1), 100
reference values against 10 000) and 37 % (Zipf categories, 300 against
10 000); with these they breach at most at the nominal rate (see
``tests/test_drift_kernels.py``).

The reported ``threshold`` is the effective one (baseline + margin).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
from scipy import special

from .base import Context, Detector, Finding, Param, number, one_of, optional, str_list
from .decision import adjust_p_values, classify
from .drift_common import iso, some_names
from .profile import CategoricalCounts, CategoricalReference, NumericCounts, NumericReference, Profile

__all__ = ["DataQuality", "rate_increase_p", "hypergeom_sf", "out_of_range_p", "absent_probability", "unseen_p"]

#: Largest lattice (in points) on which :func:`unseen_p` computes the independent sum exactly;
#: beyond it category sizes are rounded up to a coarser step (which only raises the bound).
LATTICE_MAX = 1 << 16
#: Categories whose absence is this nearly certain count as absent (which only raises the bound).
NEGLIGIBLE = 1e-12
#: The rarely absent categories (smallest expected unseen count t·q first) whose t·q add up to at
#: most this leave the lattice; their t·q is added to the bound's numerator instead.
NEGLIGIBLE_MEAN = 1e-12
#: Category sizes up to which :func:`absent_probability` sums its product exactly.
ABSENT_TABLE = 1 << 16


def rate_increase_p(k_current: int, m: int, k_reference: int, n: int) -> float:
    r"""One-sided p-value that the window's event rate exceeds the reference's: Fisher's exact test.

    Each row holds the event (missing, infinite) or not.  Given the
    :math:`K = k_c + k_r` events of the :math:`N = n + m` rows together, the
    window's count is hypergeometric when nothing changed — its m rows are a
    random m of the N — and the p-value is :math:`P(X \ge k_c)`,
    :math:`X \sim \mathrm{Hypergeometric}(N, K, m)` (:func:`hypergeom_sf`).
    (Binomial(K, m/N) would let rows hold several events: its variance is
    too large by :math:`(N-1)/(N-K)`, which hid a rise from 50 % to 56 %
    missing in 1 000 rows against 1 000.)

    >>> round(rate_increase_p(30, 1000, 10, 1000), 7)
    0.0010042
    >>> from scipy.stats import fisher_exact
    >>> round(float(fisher_exact([[30, 970], [10, 990]], alternative="greater").pvalue), 7)
    0.0010042
    >>> rate_increase_p(0, 1000, 10, 1000)
    1.0
    """
    k = k_current + k_reference
    if k == 0 or k_current == 0 or m == 0:
        return 1.0
    return hypergeom_sf(k_current, population=n + m, successes=k, draws=m)


def hypergeom_sf(x: int, *, population: int, successes: int, draws: int) -> float:
    r""":math:`P(X \ge x)` for :math:`X \sim \mathrm{Hypergeometric}` (``draws`` from ``population`` holding
    ``successes``): the tail on the far side of the mean, summed in log space.

    .. math:: P(X = j) = \binom{K}{j}\binom{N-K}{m-j} \Big/ \binom{N}{m}

    Above the mean the upper tail is summed, below it one minus the lower tail.
    The first term comes from ``lgamma``, the next ones from the ratio of
    successive terms, in chunks until a term falls below 1e-20 of the
    largest (beyond the mode the terms fall faster than a normal density's).

    >>> from scipy.stats import hypergeom
    >>> round(hypergeom_sf(560, population=2000, successes=1060, draws=1000), 8)
    0.00409673
    >>> round(float(hypergeom.sf(559, 2000, 1060, 1000)), 8)
    0.00409673
    """
    big_n, k, m = population, successes, draws
    lo, hi = max(0, m - (big_n - k)), min(k, m)
    if x <= lo:
        return 1.0
    if x > hi:
        return 0.0
    upper = x * big_n > m * k
    start, stop = (x, hi) if upper else (x - 1, lo)
    log_first = (math.lgamma(k + 1) - math.lgamma(start + 1) - math.lgamma(k - start + 1)
                 + math.lgamma(big_n - k + 1) - math.lgamma(m - start + 1) - math.lgamma(big_n - k - m + start + 1)
                 - math.lgamma(big_n + 1) + math.lgamma(m + 1) + math.lgamma(big_n - m + 1))
    total, peak, log_at = 0.0, 0.0, 0.0  # the terms relative to the first one, their largest log
    chunk = 1024
    j0 = start
    while True:
        n_terms = min(chunk, abs(stop - j0) + 1)
        j = j0 + np.arange(n_terms - 1, dtype=np.float64) * (1 if upper else -1)
        if upper:  # P(j+1)/P(j)
            ratio = (k - j) * (m - j) / ((j + 1) * (big_n - k - m + j + 1))
        else:  # P(j-1)/P(j)
            ratio = j * (big_n - k - m + j) / ((k - j + 1) * (m - j + 1))
        logs = log_at + np.concatenate([[0.0], np.cumsum(np.log(ratio))])
        peak = max(peak, float(logs.max()))  # near the mode the terms may rise a little: never far
        total += float(np.exp(logs).sum())
        last = float(logs[-1])
        j0 += (n_terms if upper else -n_terms)
        if (upper and j0 > stop) or (not upper and j0 < stop) or last < peak - 46.0:  # e^-46 = 1e-20
            break
        # the next chunk starts one step beyond this one's last term
        jl = j0 - (1 if upper else -1)
        step = ((k - jl) * (m - jl) / ((jl + 1) * (big_n - k - m + jl + 1)) if upper
                else jl * (big_n - k - m + jl) / ((k - jl + 1) * (m - jl + 1)))
        log_at = last + math.log(step)
        chunk *= 2
    tail = math.exp(log_first) * total
    return float(min(max(tail if upper else 1.0 - tail, 0.0), 1.0))


def out_of_range_p(k: int, m: int, n: int) -> float:
    r"""One-sided exact p-value of ``k`` of ``m`` window values outside the range of ``n`` reference values.

    Under no change the N = n + m values are exchangeable, so the reference
    takes a uniformly random n of the N places of the pooled order.  The
    window values outside the reference's [min, max] are those before the
    first and after the last reference place; j of them split j + 1 ways
    between the two ends and the n − 2 inner reference values fall
    anywhere among the other N − j − 2 places, so

    .. math::

        P(K = j) = \frac{(j + 1)\binom{N - j - 2}{n - 2}}{\binom{N}{n}},
        \qquad K \sim \mathrm{BetaBinomial}(m, 2, n - 1),

    and (two hockey-stick sums) the p-value is

    .. math::

        P(K \ge k) = \frac{(k + 1)\binom{N-k-1}{n-1} + \binom{N-k-1}{n}}{\binom{N}{n}}
                   = \frac{m (m-1) \cdots (m-k+1)}{(N-1)(N-2) \cdots (N-k)}
                     \cdot \frac{n (k + 1) + m - k}{N}.

    (One end alone: :math:`P(K_+ \ge k) = \frac{m (m-1) \cdots (m-k+1)}{N (N-1) \cdots (N-k+1)}`.
    The n + 1 runs of window values between successive reference values are
    exchangeable, so K is also distributed as the window values before the
    second reference value: NegativeHypergeometric(N, m, 2).)
    The mean is :math:`2m/(n+1)`, the ``out_of_range_rate`` baseline.  The
    product is summed as logarithms over min(k, n − 1) factors,
    :math:`\prod_{j<n-1} (1 - k/(N-1-j))`, to full double precision.
    With ties a value equal to a reference extreme is not outside, so K is
    only smaller and the p-value conservative.

    >>> round(out_of_range_p(300, 10000, 100), 3)   # 3 % outside a 100-value range: usual
    0.196
    >>> out_of_range_p(700, 10000, 100) < 0.01      # 7 %: not
    True
    >>> out_of_range_p(300, 10000, 5000) < 1e-40    # 3 % outside a 5000-value range: far from usual
    True
    >>> from scipy import stats
    >>> bool(abs(out_of_range_p(7, 200, 50) - stats.betabinom.sf(6, 200, 2, 49)) < 1e-12)
    True
    """
    k, m, n = int(k), int(m), int(n)
    if k <= 0 or m <= 0:
        return 1.0
    if k > m:
        return 0.0
    if n <= 1:  # a single reference value: every other continuous value is outside it
        return 1.0
    big_n = n + m
    if n - 1 <= k:
        j = np.arange(n - 1, dtype=np.float64)
        log_ratio = float(np.log1p(-k / (big_n - 1 - j)).sum())
    else:
        i = np.arange(k, dtype=np.float64)
        log_ratio = float(np.log1p(-(n - 1) / (big_n - 1 - i)).sum())
    return float(min(1.0, np.exp(log_ratio) * (n * (k + 1) + m - k) / big_n))


def absent_probability(pooled: np.ndarray, n: int) -> np.ndarray:
    r"""Chance that a category with ``pooled`` values in all has none in a random ``n`` of the N values.

    .. math::  q_t = \binom{N - t}{n} \Big/ \binom{N}{n} = \prod_{i<t} \left(1 - \frac{n}{N - i}\right)
               = \frac{B(N - t + 1, t)}{B(m - t + 1, t)}, \qquad m = N - n,

    the hypergeometric probability of zero successes (0 when t > m).  The
    product is summed as logarithms (a cumulative table) for t up to
    ``ABSENT_TABLE``, to full precision; larger t use the beta functions
    (about 1e-9 relative).

    >>> absent_probability(np.array([1, 2, 10]), 5).round(4).tolist()   # N = 13
    [0.6154, 0.359, 0.0]
    """
    t = np.asarray(pooled, dtype=np.int64)
    big_n = int(t.sum())
    n = int(n)
    m = big_n - n
    q = np.zeros(t.shape, dtype=np.float64)
    ok = (t >= 1) & (t <= m)
    if not ok.any():
        return q
    t_ok = t[ok]
    log_q = np.empty(t_ok.size)
    small = t_ok <= ABSENT_TABLE
    if small.any():
        top = int(t_ok[small].max())
        table = np.concatenate([[0.0], np.cumsum(np.log1p(-n / (big_n - np.arange(top, dtype=np.float64))))])
        log_q[small] = table[t_ok[small]]
    big = ~small
    if big.any():
        tt = t_ok[big].astype(np.float64)
        log_q[big] = special.betaln(big_n - tt + 1, tt) - special.betaln(m - tt + 1, tt)
    q[ok] = np.exp(log_q)
    return np.minimum(q, 1.0)


def _lattice_pmf(weights: np.ndarray, q: np.ndarray) -> np.ndarray:
    r"""Distribution of :math:`W = \sum_c w_c Z_c`, independent :math:`Z_c \sim` Bernoulli(q_c), on 0 … Σw.

    Categories of equal weight are one binomial factor (with the largest q
    of the group, so W can only grow); the characteristic function
    :math:`\prod_c (1 - q_c + q_c e^{i\omega w_c})` on a grid of more than Σw
    Fourier frequencies is inverted by one real FFT, exact up to rounding
    (the support fits, nothing wraps around).  Rounding noise is clipped to 0,
    which only adds mass.

    >>> _lattice_pmf(np.array([1, 2]), np.array([0.5, 0.25])).round(6).tolist()
    [0.375, 0.375, 0.125, 0.125]
    """
    from scipy import fft as sp_fft  # here, not at the top: only a window with unseen values needs it

    total = int(weights.sum())
    size = sp_fft.next_fast_len(total + 1, real=True)  # > total: nothing wraps around
    ws, inv = np.unique(weights, return_inverse=True)
    counts = np.bincount(inv, minlength=ws.size)
    q_max = np.zeros(ws.size)
    np.maximum.at(q_max, inv, q)
    half = size // 2 + 1
    k = np.arange(half, dtype=np.int64)
    roots = np.exp(2j * np.pi * np.arange(size) / size)
    phi = np.ones(half, dtype=np.complex128)
    idx = np.empty(half, dtype=np.int64)
    factor = np.empty(half, dtype=np.complex128)
    for w, g, qq in zip(ws.tolist(), counts.tolist(), q_max.tolist(), strict=True):
        np.multiply(k, w, out=idx)
        np.remainder(idx, size, out=idx)
        roots.take(idx, out=factor)  # e^{iωw} at ω = 2πk/size
        factor *= qq
        factor += 1.0 - qq
        while True:  # phi *= factor ** g, by squaring
            if g & 1:
                phi *= factor
            g >>= 1
            if not g:
                break
            factor *= factor
    return np.clip(np.fft.irfft(np.conj(phi), size)[:total + 1], 0.0, None)


def _stop_loss_bound(pmf: np.ndarray, v: float, step: int, extra: float) -> float:
    r""":math:`\min_{0 \le a < v} (E(hW - a)_+ + extra) / (v - a)` over a = h·b, b = 0, 1, … (the optimum is there)."""
    top = int(np.ceil(v / step)) - 1  # largest b with h·b < v
    sf = np.cumsum(pmf[::-1])[::-1]                                   # P(W >= x), x = 0 … S
    excess = np.append(np.cumsum(sf[::-1])[::-1][1:], 0.0)             # E(W - b)_+ = Σ_{x > b} P(W >= x)
    b = np.arange(top + 1)
    mean_excess = np.where(b < excess.size, excess[np.minimum(b, excess.size - 1)], 0.0)
    return float(np.min((step * mean_excess + extra) / (v - step * b)))


def _chernoff_bound(t: np.ndarray, q: np.ndarray, v: float, *, counts: np.ndarray | None = None) -> float:
    r""":math:`\min_{s \ge 0} e^{-sv} \prod_c (1 - q_c + q_c e^{s t_c})^{g_c}` (Markov with :math:`e^{s(x - v)}`).

    ``counts`` (:math:`g_c`, default 1) lets equal categories share one term.

    >>> round(_chernoff_bound(np.array([1]), np.array([0.5]), 1.0), 6)   # P(Z = 1) itself
    0.5
    >>> _chernoff_bound(np.array([1]), np.array([0.5]), 2.0)
    0.0
    """
    tf = t.astype(np.float64)
    g = np.ones(tf.shape) if counts is None else np.asarray(counts, dtype=np.float64)
    log_q, log_1q = np.log(q), np.log1p(-q)
    total = float(np.sum(g * tf))
    if v > total:
        return 0.0
    if v == total:
        return float(np.exp(np.sum(g * log_q)))

    def slope(s: float) -> float:  # K'(s), from Σ g t q (s = 0) up to Σ g t
        return float(np.sum(g * tf * special.expit(log_q - log_1q + s * tf)))

    if v <= slope(0.0):
        return 1.0
    hi = 1.0 / tf.max()
    while slope(hi) < v:
        hi *= 2.0
    from scipy import optimize  # here, not at the top: importing it costs 0.3 s and 40 MB at every start

    s = optimize.brentq(lambda x: slope(x) - v, 0.0, hi, xtol=1e-15, rtol=1e-13)
    log_mgf = float(np.sum(g * np.logaddexp(log_1q, log_q + s * tf)))
    return float(np.exp(min(0.0, log_mgf - s * v)))


#: Union-bound penalties :math:`\sum_{c \in B} q_c` tried by :func:`_split_chernoff_bound` (besides B = ∅).
SPLIT_PENALTIES = 10.0 ** -np.array([300, 200, 100, 60, 40, 30, 20, 15, 12, 10, 8, 6, 5, 4, 3, 2])


def _split_chernoff_bound(t: np.ndarray, q: np.ndarray, v: float) -> float:
    r"""The Chernoff bound with the surely present large categories taken out by a union bound.

    For any set B of categories, :math:`U \ge v` needs :math:`U_A \ge v` (A the others) or some
    category of B absent, so

    .. math::  P(U \ge v) \le \min_B \Big( \min_{s \ge 0} e^{-sv} \prod_{c \notin B} (1 - q_c + q_c e^{s t_c})
               + \sum_{c \in B} q_c \Big),

    valid under any dependence (:math:`U_A` keeps the negative association, so the
    first term bounds it through :math:`U^*_A`).  B runs over the largest categories (largest
    :math:`t_c`, hence smallest :math:`q_c`), as many as keep :math:`\sum_B q_c` at most each of
    ``SPLIT_PENALTIES``, and B = ∅.  With B = ∅ this is :func:`_chernoff_bound`, where a category of
    53 000 values with :math:`q_c = 6 \cdot 10^{-169}` caps s at about 387/53 000: four of them held
    the bound at 0.014 for a tail of :math:`2.4 \cdot 10^{-168}` (``tests/test_unseen_rate_bound.py``).

    >>> t = np.array([53_000] * 4 + [1] * 90_000); q = absent_probability(t, 2000)
    >>> round(_chernoff_bound(t, q, 90_000.0), 4), _split_chernoff_bound(t, q, 90_000.0) < 1e-150
    (0.0141, True)
    """
    ts, inv = np.unique(np.asarray(t, dtype=np.int64), return_inverse=True)  # ascending sizes
    g = np.bincount(inv, minlength=ts.size).astype(np.float64)
    qs = np.zeros(ts.size)
    np.maximum.at(qs, inv, q)  # equal sizes have equal q; the largest if not, which only raises the bound
    penalty = np.append(np.cumsum((g * qs)[::-1])[::-1], 0.0)  # penalty[k] = Σ q over sizes k, k+1, …
    cuts = {ts.size} | {int(np.searchsorted(-penalty, -eps, side="left")) for eps in SPLIT_PENALTIES}
    best = 1.0
    for k in sorted(cuts, reverse=True):  # B = sizes k, k+1, …; k = ts.size: B = ∅
        pen = float(penalty[k])
        if pen >= best:
            continue
        chern = _chernoff_bound(ts[:k], qs[:k], v, counts=g[:k]) if k > 0 else (0.0 if v > 0 else 1.0)
        best = min(best, chern + pen)
    return best


def unseen_p(pooled: np.ndarray, unseen: int, n: int) -> float:
    r"""One-sided p-value that the window shows more values of categories the reference lacks than chance.

    ``pooled`` holds every category's count in reference and window
    together (t_c; categories of either side), ``unseen`` the window's
    values of categories with no reference value (u), ``n`` the
    reference's non-null values; the window has m = Σt − n.

    Under no change, given the pooled counts, the reference is a uniformly
    random n of the N = n + m values (a permutation test: valid for any
    distribution, however small either side).  Then

    .. math::  U = \sum_c t_c Z_c, \qquad Z_c = [\text{no reference value of } c],
               \qquad P(Z_c = 1) = q_c = \binom{N - t_c}{n} \Big/ \binom{N}{n}

    (:func:`absent_probability`).  The :math:`Z_c` are decreasing functions
    of disjoint parts of the multivariate hypergeometric reference counts,
    hence negatively associated (Joag-Dev & Proschan 1983), so :math:`U`
    is below :math:`U^* = \sum_c t_c Z^*_c`, independent
    :math:`Z^*_c \sim \mathrm{Bernoulli}(q_c)`, in convex order
    (Shao 2000): :math:`E f(U) \le E f(U^*)` for every convex f.  Every
    convex f ≥ 0 with f ≥ 1 from u on bounds :math:`P(U \ge u) \le E f(U^*)`;
    the best are hinges, so the p-value is the stop-loss bound

    .. math::  p = \min\left(1,\ \min_{0 \le a < u} \frac{E\,(U^* - a)_+}{u - a}\right),

    computed from the exact distribution of :math:`U^*` (an FFT of
    :math:`\prod_c (1 - q_c + q_c e^{i\omega t_c})`, :func:`_lattice_pmf`).
    It is valid at every level; the price is conservatism — for a normal
    :math:`U^*` with a 5 % tail at u the bound is 12.5 %.  Categories
    almost surely absent (:math:`q_c \ge 1 - 10^{-12}`) count as absent, and
    the rarely absent ones whose means :math:`t_c q_c` add up to at most
    :math:`10^{-12}` add that sum to :math:`E(U^* - a)_+` instead of
    entering the lattice, both only raising p.  When the pooled counts
    exceed ``LATTICE_MAX`` lattice points they are rounded up to multiples
    of a step (raising p) and a Chernoff bound (f exponential) is taken as
    well, if smaller — alone if the rounded sizes still need more than twice
    ``LATTICE_MAX`` points.  Large categories, almost surely present, would
    cap its exponent s (four of 53 000 values, :math:`q_c = 6 \cdot 10^{-169}`,
    held it at 0.014 for a tail of :math:`2.4 \cdot 10^{-168}`), so a set B of the
    largest ones leaves it through a union bound — :math:`U \ge u` needs
    :math:`U_A \ge u` for the others or some category of B absent:

    .. math::  p_{\text{Chernoff}} = \min_B \Big( \min_{s \ge 0} e^{-su}
               \prod_{c \notin B} (1 - q_c + q_c e^{s t_c}) + \sum_{c \in B} q_c \Big),

    B = ∅ or the largest categories with :math:`\sum_B q_c` at most each of
    ``SPLIT_PENALTIES`` (:func:`_split_chernoff_bound`).  Cost: one FFT of at
    most ``LATTICE_MAX`` points per distinct category size, about 10 ms for
    300 categories against a 10 000-value window and at most about 0.2 s.

    >>> ref, win = [500, 300, 150, 40, 9, 1], [480, 310, 140, 45, 12, 3]   # 1000 values each
    >>> pooled = [r + w for r, w in zip(ref, win)]
    >>> round(unseen_p(pooled + [2, 1], 3, 1000), 3)   # three values of two new categories: usual
    0.297
    >>> unseen_p(pooled + [60], 60, 1000) < 1e-12       # a new category with 6 % of the window
    True
    >>> big = [500 + 52_500] * 4                         # 2000 reference values, 210 000 window values
    >>> unseen_p(big + [1] * 90_000, 90_000, 2000) < 1e-100   # and 90 000 new ones: 30 % of the window
    True
    """
    t = np.asarray(pooled, dtype=np.int64)
    t = t[t > 0]
    u = int(unseen)
    m = int(t.sum()) - int(n)
    if u <= 0 or m <= 0 or n <= 0:
        return 1.0
    q = absent_probability(t, int(n))
    sure = q >= 1.0 - NEGLIGIBLE
    v = u - int(t[sure].sum())
    if v <= 0:
        return 1.0
    live = ~sure & (q > 0)
    t, q = t[live], q[live]
    mean = t * q
    order = np.argsort(mean, kind="stable")
    tiny = np.zeros(t.size, dtype=bool)
    tiny[order] = np.cumsum(mean[order]) <= NEGLIGIBLE_MEAN  # together they add at most this to p
    extra = float(mean[tiny].sum())
    tl, ql = t[~tiny], q[~tiny]
    total = int(tl.sum())
    if v > total:
        return float(min(1.0, extra / (v - total)))  # W ≤ total: a = total in the stop-loss bound
    step = max(1, -(-total // LATTICE_MAX))
    weights = -(-tl // step)
    p = 1.0
    if int(weights.sum()) <= 2 * LATTICE_MAX:
        p = _stop_loss_bound(_lattice_pmf(weights, ql), float(v), step, extra)
    if step > 1:
        p = min(p, _split_chernoff_bound(t, q, float(v)))
    return float(min(1.0, max(p, 0.0)))


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
        p0 = 2.0 / (ref.n + 1)  # the mean of the exact null distribution, per window value
        row = {"target": col, "statistic": "out_of_range_rate", "n_reference": ref.n, "n_current": m,
               "baseline": p0}
        if ref.n < self.min_rows or m < self.min_rows:
            row |= {"value": None, "p": None,
                    "note": "no finite reference values" if ref.n == 0 else None}
        else:
            row |= {"value": k_out / m, "p": out_of_range_p(k_out, m, ref.n),
                    "note": f"below {int(cur.counts[0])}, above {int(cur.counts[-1])} "
                            f"the reference range [{ref.minimum:.10g}, {ref.maximum:.10g}]"}
        rows.append(row)
        return rows

    def _categorical_rows(self, col: str, ref: CategoricalReference, cur: CategoricalCounts) -> list[dict[str, Any]]:
        ref_total = ref.n + ref.n_missing
        m_total = cur.n_total
        rows = [self._rate_row(col, "missing_rate", cur.n_null, m_total, ref.n_missing, ref_total,
                               f"null {cur.n_null} of {m_total} rows")]
        aligned, unseen, names = cur.aligned(ref)
        m = m_total - cur.n_null
        singletons = int(np.count_nonzero(ref.counts == 1))
        p0 = (singletons + 1) / (ref.n + 1)
        row = {"target": col, "statistic": "unseen_rate", "n_reference": ref.n, "n_current": m, "baseline": p0}
        if ref.n < self.min_rows or m < self.min_rows:
            row |= {"value": None, "p": None, "note": None}
        else:
            shown = some_names(names, at_most=5)
            pooled = np.concatenate([ref.counts + aligned,
                                     np.fromiter((cur.counts[k] for k in names), np.int64, len(names))])
            row |= {"value": unseen / m, "p": unseen_p(pooled, unseen, ref.n),
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
