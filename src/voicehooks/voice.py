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


# Whole calls as the voice platform reports them, by how they end (`voicehooks trigger --call`):
# an inbound call starts, rings and is answered, or is not; an outbound one is first accepted.
CALL_LIFE_CYCLES: dict[str, dict[str, tuple[str, ...]]] = {
    "voice.inbound": {
        "completed": ("starting", "ringing", "ongoing", "completed"),
        "no-answer": ("starting", "ringing", "no-answer"),
        "busy": ("starting", "busy"),
        "failed": ("starting", "failed"),
    },
    "voice.outbound": {
        "completed": ("accepted", "starting", "ringing", "ongoing", "completed"),
        "no-answer": ("accepted", "starting", "ringing", "no-answer"),
        "busy": ("accepted", "starting", "busy"),
        "failed": ("accepted", "starting", "failed"),
        "cancelled": ("accepted", "starting", "ringing", "cancelled"),
    },
}
