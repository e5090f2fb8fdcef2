"""Request and response bodies of the webhook-subscriptions API (Bird's field names)."""

import uuid
from datetime import datetime
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from voicehooks.voice import EventName

MASK = "********"


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


def _printable(value: str) -> str:
    if not value.isprintable():
        raise ValueError("must contain printable characters only")
    return value


def _storable(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refuse it here instead of failing with a 500 later.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


SigningKey = Annotated[
    str,
    Field(min_length=8, max_length=512, description="8–512 printable characters."),
    AfterValidator(_printable),
]
TargetUrl = Annotated[
    str, Field(min_length=1, max_length=2048, description="Absolute https URL, no user-info.")
]
Template = Annotated[str, Field(max_length=65536), AfterValidator(_storable)]
SubscriptionStatus = Literal["active", "inactive"]


class EventFilter(BaseModel):
    key: str = Field(max_length=64, description="`channelId` or `status`.")
    value: str = Field(max_length=255)


EventFilters = Annotated[list[EventFilter], Field(max_length=32)]


class SubscriptionCreate(CamelModel):
    service: Literal["channels"]
    event: EventName
    url: TargetUrl
    signing_key: SigningKey | None = Field(
        default=None, description="Omit it to have a strong key generated (shown once)."
    )
    event_filters: EventFilters | None = Field(
        default=None, description="`null` or absent: no filters (as with Bird)."
    )
    template: Template | None = None


class SubscriptionUpdate(CamelModel):
    model_config = ConfigDict(extra="forbid")

    url: TargetUrl | None = None
    signing_key: SigningKey | None = None
    status: SubscriptionStatus | None = None
    event_filters: EventFilters | None = None
    template: Template | None = None


class SubscriptionOut(CamelModel):
    id: uuid.UUID
    organization_id: uuid.UUID
    workspace_id: uuid.UUID
    service: str
    event: str
    event_filters: list[EventFilter]
    template: str | None
    url: str
    signing_key: str = Field(description="Masked, except in the 201 that generated it.")
    status: SubscriptionStatus
    status_reason: str | None
    created_at: datetime
    updated_at: datetime


class SubscriptionPage(CamelModel):
    results: list[SubscriptionOut]
    next_page_token: str | None = Field(default=None, description="Absent on the last page.")


def mask_signing_key(key: str) -> str:
    return MASK + key[-4:] if len(key) >= 16 else MASK
