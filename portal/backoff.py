"""Exponential backoff with jitter, the one formula every retry of the portal uses."""

import random


def backoff(attempt: int, base: float, cap: float) -> float:
    """Seconds to wait before retrying after failed attempt number ``attempt`` (1-based).

    Exponential: ``base * 2 ** (attempt - 1)``, capped at ``cap``, then "equal jitter":
    half of it fixed plus a uniformly random part of up to the other half, so waits never
    shrink to nothing and retries of many callers spread out. The formula is the "Equal
    Jitter" of Marc Brooker, "Exponential Backoff And Jitter" (AWS Architecture Blog, 2015).

    >>> 2.5 <= backoff(1, base=5, cap=60) <= 5
    True
    """
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    return delay / 2 + random.random() * delay / 2
