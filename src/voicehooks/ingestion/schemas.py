"""Bodies of the internal ingestion API (SPEC §3)."""

import uuid
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, WithJsonSchema
from pydantic.json_schema import GetJsonSchemaHandler, JsonSchemaValue
from pydantic_core import CoreSchema

from voicehooks.timestamps import Timestamp
from voicehooks.voice import CALL_STATUSES, EventName

MAX_BATCH = 1000

EVENT_EXAMPLE: dict[str, Any] = {
    "id": "platform-event-0001",
    "workspaceId": "7d8e9f0a-1b2c-4d3e-9f4a-5b6c7d8e9f0a",
    "event": "voice.inbound",
    "occurredAt": "2026-11-24T09:30:00Z",
    "payload": {
        "id": "call-7f3a",
        "channelId": "b827924e-9789-4c2f-a4d5-b352175354f6",
        "status": "ringing",
        "direction": "incoming",
        "from": "+31612345678",
        "to": "+31201234567",
    },
}
RESULT_EXAMPLE: dict[str, Any] = {
    "id": "2b4d6f8a-0c1e-4a3b-8d5f-7a9b1c3d5e7f",
    "deliveries": 1,
    "duplicate": False,
}


def _payload_schema(event: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": "The call as the voice platform reports it; every field is kept and "
        "delivered as given.",
        "required": ["id", "channelId", "status"],
        "properties": {
            "id": {"type": "string", "minLength": 1, "maxLength": 255, "description": "Call id."},
            "channelId": {"type": "string", "format": "uuid"},
            "status": {"type": "string", "enum": list(CALL_STATUSES[event])},
        },
        "additionalProperties": True,
    }


# Kept as the raw mapping so that fields and their order reach the receiver untouched; the
# three fields matching needs are checked in the service (ingestion.service.call_facts).
CallPayload = Annotated[dict[str, Any], WithJsonSchema(_payload_schema("voice.inbound"))]
_EVENT_ID = Field(default=None, min_length=1, max_length=255, description="Idempotency key.")


class InboundCallEvent(BaseModel):
    """A call-status change of an incoming call."""

    id: str | None = _EVENT_ID
    workspaceId: uuid.UUID
    event: Literal["voice.inbound"]
    occurredAt: Timestamp | None = None
    payload: Annotated[dict[str, Any], WithJsonSchema(_payload_schema("voice.inbound"))]


class OutboundCallEvent(BaseModel):
    """A call-status change of an outgoing call."""

    id: str | None = _EVENT_ID
    workspaceId: uuid.UUID
    event: Literal["voice.outbound"]
    occurredAt: Timestamp | None = None
    payload: Annotated[dict[str, Any], WithJsonSchema(_payload_schema("voice.outbound"))]


# How the document describes an event: payload.status depends on the event.
_DOCUMENTED_EVENT = TypeAdapter(
    Annotated[InboundCallEvent | OutboundCallEvent, Field(discriminator="event")]
).core_schema


class EventIn(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return handler(_DOCUMENTED_EVENT)

    id: str | None = Field(
        default=None, min_length=1, max_length=255, description="Idempotency key."
    )
    workspace_id: uuid.UUID = Field(alias="workspaceId")
    event: EventName
    occurred_at: Timestamp | None = Field(default=None, alias="occurredAt")
    payload: CallPayload


class EventBatchIn(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"events": [EVENT_EXAMPLE]}]})

    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


class IngestResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [RESULT_EXAMPLE]})

    id: uuid.UUID
    deliveries: int
    duplicate: bool


class BatchResult(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"results": [RESULT_EXAMPLE]}]})

    results: list[IngestResult]
