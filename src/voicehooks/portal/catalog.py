"""The event catalog page's content: the two events, their call statuses, schema and example."""

import json
from dataclasses import dataclass
from typing import Any

from voicehooks.voice import CALL_STATUSES, SERVICE

STATUS_DESCRIPTIONS = {
    "accepted": "The platform accepted the request to place the call.",
    "starting": "The call is being set up.",
    "ringing": "The other party's phone is ringing.",
    "ongoing": "The call was answered and is in progress.",
    "completed": "The call ended normally after it was answered.",
    "no-answer": "Nobody answered before the call timed out.",
    "busy": "The other party was busy.",
    "failed": "The call could not be connected.",
    "cancelled": "The call was cancelled before it was answered.",
}
EVENT_DESCRIPTIONS = {
    "voice.inbound": "A call to one of your numbers changed status.",
    "voice.outbound": "A call placed from one of your channels changed status.",
}
_DIRECTIONS = {"voice.inbound": "incoming", "voice.outbound": "outgoing"}


@dataclass(frozen=True)
class EventEntry:
    name: str
    description: str
    statuses: list[tuple[str, str]]
    schema: str
    example: str


def payload_schema(event: str) -> dict[str, Any]:
    """JSON Schema of a delivered body of `event` (SPEC §3, §4)."""
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": f"{event} delivery",
        "type": "object",
        "required": ["service", "event", "payload"],
        "properties": {
            "service": {"const": SERVICE},
            "event": {"const": event},
            "payload": {
                "type": "object",
                "required": ["id", "channelId", "status"],
                "properties": {
                    "id": {
                        "type": "string",
                        "minLength": 1,
                        "maxLength": 255,
                        "description": "The call id: the same on every event of one call.",
                    },
                    "channelId": {"type": "string", "format": "uuid"},
                    "status": {"enum": list(CALL_STATUSES[event])},
                    "direction": {"type": "string"},
                    "from": {"type": "string"},
                    "to": {"type": "string"},
                },
                "additionalProperties": True,
            },
        },
    }


def example_body(event: str) -> dict[str, Any]:
    return {
        "service": SERVICE,
        "event": event,
        "payload": {
            "id": "5a1d2b6e-7f7c-4b0e-9d0a-3b8c2f1e4d55",
            "channelId": "b827924e-9789-4c2f-a4d5-b352175354f6",
            "status": "ringing",
            "direction": _DIRECTIONS[event],
            "from": "+31612345678",
            "to": "+31201234567",
        },
    }


EVENT_CATALOG = [
    EventEntry(
        name=event,
        description=EVENT_DESCRIPTIONS[event],
        statuses=[(status, STATUS_DESCRIPTIONS[status]) for status in statuses],
        schema=json.dumps(payload_schema(event), indent=2),
        example=json.dumps(example_body(event), indent=2),
    )
    for event, statuses in CALL_STATUSES.items()
]
