/*
 * A probe, not part of atalaia: how cheap can exact counting on a reference grid get when compiled?
 * bench/bench_bound.py --probe-kernel builds this with the system's C compiler and compares it with
 * detectors.profile.NumericCounts.of (one SIMD sort per batch and a search of the edges).
 *
 * For float32 values it gives what NumericCounts.of gives in one pass: counts[j] = finite values with
 * exactly j edges at or below them (j = 0 .. ne), NaN and infinity counts, and the sums of the
 * deviations about one value of the batch.  Each value is mapped to one of L cells spanning the edges
 * (t = (v - lo) * scale, clamped); lut[c] is the number of edges in cells before c, all of which are
 * <= v because the map never decreases; a branchless binary search over the next 2^m - 1 edges (m so
 * that no cell holds more; the edges are padded with NaN, which compares false) finds v's bin.  The
 * cells of the edges come from the same arithmetic (probe_lut), so values and edges cannot disagree
 * by a rounding.  Build without fused multiply-add (-ffp-contract=off) for the same reason.
 */
#include <stdint.h>
#include <math.h>

static inline int64_t cell(float v, float lo, float scale, int64_t L) {
    float t = (v - lo) * scale;
    if (!(t > 0.0f)) return 0;
    if (t >= (float)(L - 1)) return L - 1;
    return (int64_t)t;
}

/* lut (L + 1 entries): edges in cells before c; returns the most edges in one cell, -1 if unsorted */
int64_t probe_lut(const float *edges, int64_t ne, float lo, float scale, int64_t L, int32_t *lut) {
    int64_t i = 0, most = 0;
    for (int64_t c = 0; c < L; c++) {
        int64_t start = i;
        lut[c] = (int32_t)i;
        while (i < ne && cell(edges[i], lo, scale, L) == c) i++;
        if (i - start > most) most = i - start;
    }
    lut[L] = (int32_t)i;
    return i == ne ? most : -1;
}

/* stats: NaN, +inf, -inf; sums: k, sum(v - k), sum((v - k)^2) over the finite values, and the sums of
   the values below the first edge and at or above the last */
void probe_count(const float *x, int64_t n, const float *pad, int64_t ne, float lo, float scale, int64_t L,
                 const int32_t *lut, int m, int64_t *counts, int64_t *stats, double *sums) {
    int64_t nan_ = 0, pinf = 0, ninf = 0;
    double k = (n && isfinite(x[n / 2])) ? (double)x[n / 2] : 0.0, s1 = 0, s2 = 0, t1 = 0, t2 = 0;
    double below = 0, above = 0;
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        if (!isfinite(v)) {
            if (v != v) nan_++; else if (v > 0) pinf++; else ninf++;
            continue;
        }
        double d = (double)v - k;
        if (i & 1) { t1 += d; t2 += d * d; } else { s1 += d; s2 += d * d; }
        int64_t base = lut[cell(v, lo, scale, L)], j = 0;
        const float *w = pad + base;
        for (int b = m - 1; b >= 0; b--) {
            int64_t step = (int64_t)1 << b;
            j += (w[j + step - 1] <= v) ? step : 0;
        }
        j += base;
        counts[j]++;
        if (j == 0) below += v; else if (j == ne) above += v;
    }
    stats[0] = nan_; stats[1] = pinf; stats[2] = ninf;
    sums[0] = k; sums[1] = s1 + t1; sums[2] = s2 + t2; sums[3] = below; sums[4] = above;
}
