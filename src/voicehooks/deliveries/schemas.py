"""Bodies of the delivery log and replay endpoints."""

import uuid
from datetime import datetime
from typing import Literal

from pydantic import Field

from voicehooks.api.timestamps import Timestamp
from voicehooks.subscriptions.schemas import CamelModel

DeliveryState = Literal["pending", "succeeded", "failed"]
ExecutionStatus = Literal["succeeded", "failed"]


class AttemptOut(CamelModel):
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
    request_id: uuid.UUID = Field(description="Bird's name of `deliveryId`.")
    attempt_count: int = Field(description="Bird's name of `attempt`.")
    http_status_code: int | None = Field(description="Bird's name of `responseStatusCode`.")


class AttemptPage(CamelModel):
    results: list[AttemptOut]
    next_page_token: str | None = None


class AttemptDetails(CamelModel):
    results: list[AttemptOut] = Field(description="Every attempt of the delivery, newest first.")


class DeliveryOut(CamelModel):
    id: uuid.UUID
    event_id: uuid.UUID
    state: DeliveryState
    attempts: int
    next_attempt_at: datetime | None = Field(description="Null once the delivery is final.")
    created_at: datetime
    error: str | None = Field(
        default=None, description="Why it ended without an attempt, e.g. `subscription inactive`."
    )


class DeliveryPage(CamelModel):
    results: list[DeliveryOut]
    next_page_token: str | None = None


class RecoverIn(CamelModel):
    since: Timestamp = Field(description="RFC 3339; failed deliveries created since then.")


class RecoverOut(CamelModel):
    requeued: int


class TestOut(CamelModel):
    delivery_id: uuid.UUID
