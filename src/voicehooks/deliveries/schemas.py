"""Bodies of the delivery log and replay endpoints."""

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator

from voicehooks.subscriptions.schemas import CamelModel
from voicehooks.timestamps import Timestamp

DeliveryState = Literal["pending", "succeeded", "failed"]
ExecutionStatus = Literal["succeeded", "failed"]


_DELIVERY_ID = "3c1e6f0a-9b8d-4e7f-a6b5-c4d3e2f1a0b9"
ATTEMPT_EXAMPLE: dict[str, Any] = {
    "id": "8a7b6c5d-4e3f-4a1b-9c8d-7e6f5a4b3c2d",
    "deliveryId": _DELIVERY_ID,
    "eventId": "1f2e3d4c-5b6a-4978-8e9f-a0b1c2d3e4f5",
    "event": "voice.inbound",
    "executionStatus": "failed",
    "attempt": 2,
    "createdAt": "2026-11-24T09:30:35.250000Z",
    "durationMs": 10003,
    "responseStatusCode": None,
    "error": "timeout",
    "responseBody": None,
    "requestId": _DELIVERY_ID,
    "attemptCount": 2,
    "httpStatusCode": None,
}
DELIVERY_EXAMPLE: dict[str, Any] = {
    "id": _DELIVERY_ID,
    "eventId": "1f2e3d4c-5b6a-4978-8e9f-a0b1c2d3e4f5",
    "state": "pending",
    "attempts": 2,
    "nextAttemptAt": "2026-11-24T09:32:35Z",
    "createdAt": "2026-11-24T09:30:00.123456Z",
    "error": None,
}


# Read from an Attempt row (from_attributes): Bird's names read the row's own columns.
class AttemptOut(CamelModel):
    model_config = ConfigDict(
        from_attributes=True, json_schema_extra={"examples": [ATTEMPT_EXAMPLE]}
    )

    id: uuid.UUID
    delivery_id: uuid.UUID
    event_id: uuid.UUID
    event: str
    execution_status: ExecutionStatus
    attempt: int = Field(description="1-based number of this attempt of its delivery.")
    created_at: datetime
    duration_ms: int
    response_status_code: int | None
    error: str | None
    response_body: str | None = Field(description="First 2 KiB of the answer, as text.")
    # The same facts under Bird's names, for clients written for Bird.
    request_id: uuid.UUID = Field(
        validation_alias="delivery_id", description="Bird's name of `deliveryId`."
    )
    attempt_count: int = Field(validation_alias="attempt", description="Bird's name of `attempt`.")
    http_status_code: int | None = Field(
        validation_alias="response_status_code", description="Bird's name of `responseStatusCode`."
    )


class AttemptPage(CamelModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"results": [ATTEMPT_EXAMPLE]}]})

    results: list[AttemptOut]
    next_page_token: str | None = None


class AttemptDetails(CamelModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"results": [ATTEMPT_EXAMPLE]}]})

    results: list[AttemptOut] = Field(description="Every attempt of the delivery, newest first.")


class DeliveryOut(CamelModel):
    model_config = ConfigDict(
        from_attributes=True, json_schema_extra={"examples": [DELIVERY_EXAMPLE]}
    )

    id: uuid.UUID
    event_id: uuid.UUID
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None = Field(description="Null once the delivery is final.")
    created_at: datetime
    error: str | None = Field(
        default=None,
        validation_alias="last_error",
        description="Why it ended without an attempt, e.g. `subscription inactive`.",
    )

    @field_validator("next_attempt_at")
    @classmethod
    def _only_while_pending(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        # A final delivery keeps the time its last retry was due: not a next attempt.
        return value if info.data.get("state") == "pending" else None


class DeliveryPage(CamelModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"results": [DELIVERY_EXAMPLE]}]})

    results: list[DeliveryOut]
    next_page_token: str | None = None


class RecoverIn(CamelModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"since": "2026-11-24T00:00:00Z"}]})

    since: Timestamp = Field(description="RFC 3339; failed deliveries created since then.")


class RecoverOut(CamelModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"requeued": 3}]})

    requeued: int


class TestOut(CamelModel):
    model_config = ConfigDict(json_schema_extra={"examples": [{"deliveryId": _DELIVERY_ID}]})

    delivery_id: uuid.UUID
