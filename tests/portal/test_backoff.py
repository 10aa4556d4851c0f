"""The portal's one backoff formula: exponential, capped, equal jitter."""

import random

from portal.backoff import backoff


def test_backoff_doubles_per_attempt_and_keeps_half_of_it_fixed():
    random.seed(7)
    for attempt, full in [(1, 5.0), (2, 10.0), (3, 20.0), (4, 40.0)]:
        waits = [backoff(attempt, base=5, cap=3600) for _ in range(200)]
        assert all(full / 2 <= w <= full for w in waits), (attempt, min(waits), max(waits))
        assert max(waits) - min(waits) > full / 4  # jittered, not a constant


def test_backoff_is_capped_even_for_huge_attempt_numbers():
    assert all(30 <= backoff(10_000, base=1, cap=60) <= 60 for _ in range(50))
    assert 0.25 <= backoff(0, base=0.5, cap=20) <= 0.5  # attempt 0 counts as the first
