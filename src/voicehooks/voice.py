"""The voice vocabulary of SPEC §1: events and the call statuses each one reports."""

from typing import Literal

SERVICE = "channels"

CALL_STATUSES: dict[str, tuple[str, ...]] = {
    "voice.inbound": (
        "starting",
        "ringing",
        "ongoing",
        "completed",
        "no-answer",
        "busy",
        "failed",
    ),
    "voice.outbound": (
        "accepted",
        "starting",
        "ringing",
        "ongoing",
        "completed",
        "no-answer",
        "busy",
        "failed",
        "cancelled",
    ),
}

EventName = Literal["voice.inbound", "voice.outbound"]
EVENTS: tuple[str, ...] = tuple(CALL_STATUSES)


def is_valid_status(event: str, status: str) -> bool:
    return status in CALL_STATUSES.get(event, ())
