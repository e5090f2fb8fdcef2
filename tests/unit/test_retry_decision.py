"""The retry decision (SPEC §4) for every class of answer: a pure function, no I/O."""

import random

import pytest

from voicehooks.dispatch.schedule import JITTER, MAX_RETRY_AFTER, Decision, Verdict, decide

DELAYS = (5.0, 30.0, 120.0)


def _decide(status: int | None, *, made: int = 1, allowed: int = 4, **kw: object) -> Decision:
    return decide(
        succeeded=status is not None and 200 <= status < 300,
        status_code=status,
        retry_after=kw.get("retry_after"),  # type: ignore[arg-type]
        attempts_made=made,
        attempts_allowed=allowed,
        delays=DELAYS,
        rng=random.Random(7),
    )


@pytest.mark.parametrize("status", [200, 201, 204, 299])
def test_any_2xx_succeeds(status):
    assert _decide(status) == Decision(Verdict.SUCCEEDED)


@pytest.mark.parametrize("status", [None, 301, 400, 404, 429, 500, 502, 503])
def test_anything_else_is_retried_within_the_jittered_schedule(status):
    decision = _decide(status, made=2)
    assert decision.verdict is Verdict.RETRY and not decision.endpoint_gone
    assert DELAYS[1] * (1 - JITTER) <= decision.retry_in <= DELAYS[1] * (1 + JITTER)


def test_410_fails_at_once_and_marks_the_endpoint_gone():
    assert _decide(410, made=1) == Decision(Verdict.FAILED, endpoint_gone=True)


@pytest.mark.parametrize("status", [None, 500, 429])
def test_the_last_allowed_attempt_is_final(status):
    assert _decide(status, made=4, allowed=4) == Decision(Verdict.FAILED)
    # Past the schedule (more attempts allowed than delays), nothing is left either.
    assert _decide(status, made=4, allowed=9) == Decision(Verdict.FAILED)


@pytest.mark.parametrize("status", [429, 503])
def test_retry_after_of_429_and_503_lengthens_the_wait_up_to_an_hour(status):
    assert _decide(status, retry_after="90").retry_in == 90.0
    assert _decide(status, retry_after="999999").retry_in == MAX_RETRY_AFTER
    # Shorter than the schedule: the schedule wins.
    assert _decide(status, retry_after="1").retry_in >= DELAYS[0] * (1 - JITTER)


def test_retry_after_of_other_statuses_is_ignored():
    assert _decide(500, retry_after="900").retry_in <= DELAYS[0] * (1 + JITTER)
