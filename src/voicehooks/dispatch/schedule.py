"""What an attempt's answer means, and when the next attempt happens: the retry decision, the
schedule with jitter, bounded by Retry-After (SPEC §4). Pure functions."""

import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from voicehooks.states import Verdict

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


@dataclass(frozen=True, slots=True)
class Decision:
    verdict: Verdict
    retry_in: float = 0.0
    # A 410: the delivery fails at once and its subscription becomes inactive.
    endpoint_gone: bool = False


def decide(
    *,
    succeeded: bool,
    status_code: int | None,
    retry_after: str | None,
    attempts_made: int,
    attempts_allowed: int,
    delays: Sequence[float],
    rng: random.Random | None = None,
) -> Decision:
    """The verdict on an attempt, `attempts_made` counting it; `attempts_allowed` is the cap."""
    if succeeded:
        return Decision(Verdict.SUCCEEDED)
    if status_code == 410:
        return Decision(Verdict.FAILED, endpoint_gone=True)
    if attempts_made >= attempts_allowed:
        return Decision(Verdict.FAILED)
    waited = parse_retry_after(retry_after) if status_code in (429, 503) else None
    delay = next_delay(delays, attempts_made, retry_after=waited, rng=rng)
    return Decision(Verdict.FAILED) if delay is None else Decision(Verdict.RETRY, delay)
