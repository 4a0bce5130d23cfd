"""keyscope.stats: the alert's ratio, intervals whose coverage is measured, edge cases without NaN."""

from __future__ import annotations

import math

import numpy as np
import pytest

from keyscope.stats import (
    chi_square_uniform,
    clamp_min,
    coefficient_of_variation,
    gini,
    max_share_interval,
    normal_interval,
    random_hashing_skews,
    ratio_share_se,
    skew_ratio,
    skew_ratios,
    z_value,
    wilson_interval,
)

REPS = 200


def test_skew_ratio_is_the_alert_rule():
    # the seed's lag 339:0:0 -> 339 / clamp_min(113, 0.001) = 3
    assert skew_ratio([339, 0, 0]) == pytest.approx(3.0)
    assert skew_ratio([0, 0, 0]) == 0.0  # 0 / clamp_min(0, 0.001)
    assert skew_ratio([0.0005, 0, 0]) == pytest.approx(0.0005 / 0.001)  # the clamp is what bites
    assert skew_ratio([]) == 0.0
    assert clamp_min(0.0) == 0.001 and clamp_min(5.0) == 5.0
    rows = np.array([[339, 0, 0], [1, 1, 1], [0, 0, 0], [0.0005, 0, 0]])
    assert skew_ratios(rows).tolist() == pytest.approx([skew_ratio(r) for r in rows.tolist()])


def test_wilson_matches_the_textbook_values():
    # Wilson 95% for 5/10 and 0/10 and 10/10 (z = 1.959964)
    lo, hi = wilson_interval(5, 10)
    assert (float(lo), float(hi)) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert float(lo) == 0.0 and float(hi) == pytest.approx(0.2775, abs=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert float(lo) == pytest.approx(0.7225, abs=1e-4) and float(hi) == 1.0
    lo, hi = wilson_interval(0, 0)  # nothing seen: nothing known
    assert (float(lo), float(hi)) == (0.0, 1.0)


def test_ratio_se_reduces_to_binomial_with_unit_weights():
    se = ratio_share_se(30, 30, 100, 100)
    assert float(se) == pytest.approx(math.sqrt(0.3 * 0.7 / 100))
    assert float(ratio_share_se(0, 0, 0, 0)) == 0.0


def test_wilson_coverage_of_a_zipf_hot_key():
    """The top key's share of a Zipf(1.1) topic: repeated samples cover the truth ~95%."""
    rng = np.random.default_rng(11)
    k = 5000
    w = 1 / np.arange(1, k + 1) ** 1.1
    p = w / w.sum()
    hits = 0
    for _ in range(REPS):
        counts = rng.multinomial(2000, p)
        lo, hi = wilson_interval(counts[0], 2000)
        hits += lo <= p[0] <= hi
    assert 0.90 <= hits / REPS <= 0.99


@pytest.mark.parametrize(
    "probs,n",
    [
        ([1 / 6] * 6, 600),  # balanced: the naive percentile bootstrap would cover ~0%
        ([0.35, 0.13, 0.13, 0.13, 0.13, 0.13], 400),  # one clear hot partition
        ([0.22, 0.21, 0.15, 0.14, 0.14, 0.14], 3000),  # a near tie at the top
    ],
)
def test_skew_interval_coverage(probs, n):
    """The skew ratio's interval contains the topic's true ratio about 95% of the time."""
    rng = np.random.default_rng(7)
    p = np.array(probs)
    truth = p.max() * len(p)  # max / mean of the true shares
    hits = 0
    for _ in range(REPS):
        c = rng.multinomial(n, p)
        lo, hi = max_share_interval(c / n, lambda z: wilson_interval(c, n, z=z))
        hits += lo * len(p) <= truth <= hi * len(p)
    assert 0.90 <= hits / REPS <= 0.99


def test_skew_interval_coverage_by_bytes():
    """Byte shares (normal interval on the ratio estimator) cover too: sizes vary per record."""
    rng = np.random.default_rng(3)
    parts = 4
    p = np.array([0.4, 0.2, 0.2, 0.2])
    mean_size = np.array([100.0, 300.0, 100.0, 100.0])  # partition 1 has fat records
    true_bytes = p * mean_size
    truth = true_bytes.max() / true_bytes.mean()
    hits = 0
    n = 2000
    for _ in range(REPS):
        part = rng.choice(parts, size=n, p=p)
        size = rng.exponential(mean_size[part])
        y = np.bincount(part, weights=size, minlength=parts)
        s2 = np.bincount(part, weights=size**2, minlength=parts)
        share = y / y.sum()

        def fn(z):
            return normal_interval(share, ratio_share_se(y, s2, y.sum(), s2.sum()), z=z)

        lo, hi = max_share_interval(share, fn)
        hits += lo * parts <= truth <= hi * parts
    assert 0.90 <= hits / REPS <= 0.99


def test_edge_cases_stay_finite():
    for loads in ([], [0], [0, 0, 0], [5], [1e-9, 0]):
        for v in (coefficient_of_variation(loads), gini(loads), skew_ratio(loads)):
            assert math.isfinite(v)
    assert chi_square_uniform([]) is None
    assert chi_square_uniform([10]) is None
    assert chi_square_uniform([0, 0]) is None
    res = chi_square_uniform([10, 10, 10])
    assert res == {"statistic": 0.0, "dof": 2, "p_value": 1.0}
    assert max_share_interval([], lambda z: (np.zeros(0), np.zeros(0))) == (0.0, 0.0)


def test_gini_and_cv_known_values():
    assert gini([1, 1, 1, 1]) == 0.0
    assert gini([0, 0, 0, 4]) == pytest.approx(0.75)  # (n-1)/n
    assert coefficient_of_variation([2, 2]) == 0.0
    assert coefficient_of_variation([0, 4]) == pytest.approx(1.0)


def test_random_hashing_baseline():
    # one key: wherever it hashes, its partition has all the load -> skew = n
    assert np.all(random_hashing_skews([10.0], 6, reps=50) == pytest.approx(6.0))
    # the same key plus evenly spread (null-key) load of the same size
    assert np.all(random_hashing_skews([10.0], 2, spread=10.0, reps=20) == pytest.approx(1.5))
    # many equal small keys: perfect hashing is nearly even
    many = random_hashing_skews(np.ones(200_000), 6, reps=200)
    assert 1.0 < np.median(many) < 1.02


def test_random_hashing_tail_approximation_matches_exact_placement():
    """The normal approximation for the tail gives the same distribution as placing every key."""
    w = 1 / np.arange(1, 20_001) ** 1.1
    approx = random_hashing_skews(w, 6, reps=400, exact_top=200, seed=1)
    exact = random_hashing_skews(w, 6, reps=400, exact_top=20_000, seed=2)
    assert np.median(approx) == pytest.approx(np.median(exact), rel=0.03)
    assert np.quantile(approx, 0.95) == pytest.approx(np.quantile(exact, 0.95), rel=0.05)


@pytest.mark.parametrize("confidence", [0.5, 0.8, 0.9, 0.95, 0.99, 0.999])
def test_z_value_equals_scipy_within_a_few_ulp(confidence):
    from scipy.stats import norm

    ref = float(norm.ppf(1 - (1 - confidence) / 2))
    assert abs(z_value(confidence) - ref) <= 4 * math.ulp(ref)  # 2-3 ulp measured


def test_chi_square_equals_scipy_chisquare():
    from scipy.stats import chisquare

    rng = np.random.default_rng(3)
    for _ in range(100):
        c = rng.integers(0, 5000, size=int(rng.integers(2, 40))).astype(float)
        c[0] += 1  # never all zero
        ref = chisquare(c)
        got = chi_square_uniform(c)
        assert got["dof"] == c.size - 1
        assert got["statistic"] == pytest.approx(float(ref.statistic), rel=1e-12)
        assert got["p_value"] == pytest.approx(float(ref.pvalue), rel=1e-9, abs=1e-300)


def test_chi_square_sf_equals_scipy_over_dof_and_tails():
    from scipy.special import chdtrc

    from keyscope.stats import chi_square_sf

    worst = 0.0
    for dof in [1, 2, 3, 5, 11, 63, 64, 127, 500, 1000, 4095, 10_000]:
        for q in [0.0, 0.01, 0.2, 0.5, 0.9, 1.0, 1.1, 1.5, 2.0, 4.0, 10.0, 100.0]:
            x = dof * q + (q > 0) * 3 * q * math.sqrt(2 * dof)
            ref, got = float(chdtrc(dof, x)), chi_square_sf(x, dof)
            assert math.isfinite(got) and 0.0 <= got <= 1.0
            if ref > 1e-290:
                worst = max(worst, abs(got - ref) / ref)
            else:
                assert got < 1e-280
    assert worst < 1e-10, worst  # 1e-11 measured at dof 10,000 (cancellation in the log of the front factor)


def test_chi_square_sf_edges():
    from keyscope.stats import chi_square_sf

    assert chi_square_sf(0.0, 5) == 1.0
    assert chi_square_sf(1e12, 3) == 0.0  # underflows to zero, never NaN
    assert chi_square_sf(2.0, 2) == pytest.approx(math.exp(-1.0), rel=1e-14)  # dof 2: e^(-x/2)


def test_binomial_cdf_equals_scipy_bdtr():
    from scipy.special import bdtr

    from keyscope.stats import binomial_cdf

    for n in [1, 2, 5, 17, 100, 1000, 100_000]:
        for k in [-1, 0, 1, 2, 5, 11, 40]:
            for p in [0.0, 1e-6, 0.01, 0.3, 0.5, 0.9, 0.999, 1.0]:
                got = binomial_cdf(k, n, p)
                assert math.isfinite(got) and 0.0 <= got <= 1.0
                if k >= n:  # every outcome is <= k (scipy answers NaN for k > n)
                    assert got == 1.0
                    continue
                ref = float(bdtr(k, n, p)) if k >= 0 else 0.0
                assert got == pytest.approx(ref, rel=1e-9, abs=1e-300), (k, n, p, got, ref)
