"""When the next attempt happens: the retry schedule with jitter, bounded by Retry-After."""

import random
from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

JITTER = 0.2
MAX_RETRY_AFTER = 3600.0


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - (now or datetime.now(UTC))).total_seconds(), 0.0)


def next_delay(
    delays: Sequence[float],
    attempts_made: int,
    *,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float | None:
    """Seconds until the next attempt after `attempts_made` attempts; None when none is left."""
    if attempts_made < 1 or attempts_made > len(delays):
        return None
    scheduled = delays[attempts_made - 1] * (1 + (rng or random).uniform(-JITTER, JITTER))
    if retry_after is not None:
        return max(scheduled, min(retry_after, MAX_RETRY_AFTER))
    return scheduled
