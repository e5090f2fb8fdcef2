"""Bodies of the internal ingestion API (SPEC §3)."""

import uuid
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema

from voicehooks.api.timestamps import Timestamp
from voicehooks.voice import EventName

MAX_BATCH = 1000

_PAYLOAD_SCHEMA = {
    "type": "object",
    "description": "The call as the voice platform reports it; every field is delivered as given.",
    "required": ["id", "channelId", "status"],
    "properties": {
        "id": {"type": "string", "minLength": 1, "maxLength": 255, "description": "Call id."},
        "channelId": {"type": "string", "format": "uuid"},
        "status": {"type": "string", "description": "A call status of the event (SPEC §1)."},
    },
    "additionalProperties": True,
}

# Kept as the raw mapping so that fields and their order reach the receiver untouched.
CallPayload = Annotated[dict[str, Any], WithJsonSchema(_PAYLOAD_SCHEMA)]


class EventIn(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    id: str | None = Field(
        default=None, min_length=1, max_length=255, description="Idempotency key."
    )
    workspace_id: uuid.UUID = Field(alias="workspaceId")
    event: EventName
    occurred_at: Timestamp | None = Field(default=None, alias="occurredAt")
    payload: CallPayload


class EventBatchIn(BaseModel):
    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


class IngestResult(BaseModel):
    id: uuid.UUID
    deliveries: int
    duplicate: bool


class BatchResult(BaseModel):
    results: list[IngestResult]
