"""The portal's hourly latency histogram: percentiles read off bucket counts."""

from voicehooks.portal.rollups import BUCKETS, LATENCY_BOUNDS_MS, HourFigures


def _figures(durations_ms: list[int]) -> HourFigures:
    figures = HourFigures()
    for duration in durations_ms:
        bucket = sum(1 for bound in LATENCY_BOUNDS_MS if duration >= bound)  # width_bucket
        figures.latency[bucket] += 1
    return figures


def test_no_attempts_no_percentile():
    assert HourFigures().percentile(0.5) is None


def test_a_percentile_falls_in_the_bucket_of_the_true_value():
    durations = list(range(1, 1001))  # 1..1000 ms
    figures = _figures(durations)
    for q, true_value in ((0.5, 500), (0.95, 950)):
        estimate = figures.percentile(q)
        assert estimate is not None
        # Buckets are about 1.5x apart: the estimate is within one bucket of the truth.
        assert true_value / 1.5 <= estimate <= true_value * 1.5


def test_hours_of_several_subscriptions_add_up():
    fast, slow = _figures([5] * 90), _figures([2000] * 10)
    both = HourFigures()
    both.add(fast)
    both.add(slow)
    assert sum(both.latency) == 100 and len(both.latency) == BUCKETS
    p50, p95 = both.percentile(0.5), both.percentile(0.95)
    assert p50 is not None and p95 is not None
    assert 5 <= p50 < 7 and 2000 <= p95 < 3000  # the buckets [5, 7) and [2000, 3000)


def test_beyond_the_last_bound_stays_within_twice_the_bound():
    estimate = _figures([60_000]).percentile(0.99)
    assert estimate is not None
    assert LATENCY_BOUNDS_MS[-1] <= estimate <= 2 * LATENCY_BOUNDS_MS[-1]
