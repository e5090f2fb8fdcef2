"""Request and response bodies of the webhook-subscriptions API (Bird's field names)."""

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, TypeAdapter
from pydantic.alias_generators import to_camel
from pydantic.json_schema import GetJsonSchemaHandler, JsonSchemaValue
from pydantic_core import CoreSchema

from voicehooks.voice import CALL_STATUSES, EventName

MASK = "********"
SEED_EXAMPLE: dict[str, Any] = {
    "service": "channels",
    "event": "voice.inbound",
    "url": "https://example.com/hook",
    "signingKey": "mysecretkey",
    "eventFilters": [
        {"key": "channelId", "value": "b827924e-9789-4c2f-a4d5-b352175354f6"},
        {"key": "status", "value": "completed"},
        {"key": "status", "value": "starting"},
    ],
}
SUBSCRIPTION_EXAMPLE: dict[str, Any] = {
    "id": "5f0c6a3e-8a47-4c8e-9d43-0f4d9b8e2a11",
    "organizationId": "0b5e4a6c-1c2d-4e3f-8a9b-0c1d2e3f4a5b",
    "workspaceId": "7d8e9f0a-1b2c-4d3e-9f4a-5b6c7d8e9f0a",
    **{key: value for key, value in SEED_EXAMPLE.items() if key != "signingKey"},
    "template": None,
    "signingKey": "********",
    "status": "active",
    "statusReason": None,
    "createdAt": "2026-11-24T09:30:00.123456Z",
    "updatedAt": "2026-11-24T09:30:00.123456Z",
}


class CamelModel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


# "Printable": no control character (C0, DEL, C1). One pattern, checked here and published
# in the document. Lone surrogates (JSON can escape them) are refused too: they are not text,
# UTF-8 (the HMAC key's bytes, and Postgres) cannot carry them, and no regex engine of a
# JSON Schema validator can even name them.
SIGNING_KEY_PATTERN = "^[^\\u0000-\\u001f\\u007f-\\u009f]{8,512}$"
_SIGNING_KEY = re.compile("[^\x00-\x1f\x7f-\x9f\ud800-\udfff]*")
# Case-insensitive, as URL schemes are; http only where the service admits it.
URL_PATTERN = "^[Hh][Tt][Tt][Pp][Ss]?://"


def _printable(value: str) -> str:
    if not _SIGNING_KEY.fullmatch(value):
        raise ValueError("must contain printable characters only (no control characters)")
    return value


def _storable(value: str) -> str:
    # PostgreSQL text cannot hold NUL: refuse it here instead of failing with a 500 later.
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


SigningKey = Annotated[
    str,
    Field(
        min_length=8,
        max_length=512,
        description="8–512 printable characters (no control characters); signs every "
        "delivery (HMAC-SHA256).",
        json_schema_extra={"pattern": SIGNING_KEY_PATTERN},
    ),
    AfterValidator(_printable),
]
TargetUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2048,
        description="Absolute https URL (a port is fine), no user-info. Its host must not be "
        "or resolve to a loopback, private, link-local or otherwise internal address (422); "
        "a host that does not resolve yet is accepted. http:// only where the service admits "
        "it (VOICEHOOKS_ALLOW_HTTP_TARGETS).",
        json_schema_extra={"format": "uri", "pattern": URL_PATTERN},
    ),
]
Template = Annotated[str, Field(max_length=65536), AfterValidator(_storable)]
SubscriptionStatus = Literal["active", "inactive"]


class ChannelIdFilter(BaseModel):
    """Only events of this channel (at most one such filter)."""

    model_config = ConfigDict(extra="forbid")
    key: Literal["channelId"]
    value: uuid.UUID


class StatusFilter(BaseModel):
    """Only events with this call status (one filter per status; any of them matches).

    The status must be one the subscription's event reports: `accepted` and `cancelled`
    are statuses of `voice.outbound` only."""

    model_config = ConfigDict(extra="forbid")
    key: Literal["status"]
    value: Literal[tuple(dict.fromkeys(s for ss in CALL_STATUSES.values() for s in ss))]  # type: ignore[valid-type]


# How the document describes a filter; the service checks the same rules in filters.py, with
# error messages that name the event.
_DOCUMENTED_FILTER = TypeAdapter(
    Annotated[ChannelIdFilter | StatusFilter, Field(discriminator="key")]
).core_schema


class EventFilter(BaseModel):
    model_config = ConfigDict(extra="forbid")

    key: str = Field(max_length=64)
    value: str = Field(max_length=255)

    @classmethod
    def __get_pydantic_json_schema__(
        cls, core_schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        return handler(_DOCUMENTED_FILTER)


EventFilters = Annotated[
    list[EventFilter],
    Field(
        max_length=32,
        description="Filters on the events' channel and call status; no duplicates.",
        json_schema_extra={"uniqueItems": True},
    ),
]


class SubscriptionCreate(CamelModel):
    model_config = ConfigDict(json_schema_extra={"examples": [SEED_EXAMPLE]})

    service: Literal["channels"]
    event: EventName
    url: TargetUrl
    signing_key: SigningKey | None = Field(
        default=None,
        description="Omit it (or send null) to have a strong key generated, returned once "
        "in this 201.",
    )
    event_filters: EventFilters | None = Field(
        default=None, description="`null` or absent: no filters (as with Bird)."
    )
    template: Template | None = None


def _update_schema(schema: dict[str, Any]) -> None:
    """Null is refused for these fields (only eventFilters and template take null)."""
    for name in ("url", "signingKey", "status"):
        field = schema["properties"][name]
        (kept,) = [item for item in field.pop("anyOf") if item.get("type") != "null"]
        field.pop("default", None)
        field.update(kept)
    schema["minProperties"] = 1


class SubscriptionUpdate(CamelModel):
    """Any of the fields, at least one; `event` and `service` cannot change. A new
    `signingKey` rotates the key: the old one keeps signing for 24 hours."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra=_update_schema,
    )

    url: TargetUrl | None = None
    signing_key: SigningKey | None = None
    status: SubscriptionStatus | None = None
    event_filters: EventFilters | None = Field(default=None, description="null: no filters.")
    template: Template | None = None


class SubscriptionOut(CamelModel):
    model_config = ConfigDict(json_schema_extra={"examples": [SUBSCRIPTION_EXAMPLE]})

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
    status_reason: str | None = Field(
        description="Why the service made it inactive (e.g. `endpoint answered 410`); null "
        "when active or set inactive by a user. An extension of Bird's object."
    )
    created_at: datetime
    updated_at: datetime


class SubscriptionPage(CamelModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"results": [SUBSCRIPTION_EXAMPLE], "nextPageToken": "WyIyMDI2LTExIl0"}]
        }
    )

    results: list[SubscriptionOut]
    next_page_token: str | None = Field(default=None, description="Absent on the last page.")


def signing_key_hint(key: str) -> str | None:
    """What responses show of a key, stored beside it in clear: the last 4 characters of a key
    of at least 16 (no more than the masked form shows), nothing of a shorter one."""
    return key[-4:] if len(key) >= 16 else None


def mask_signing_key(hint: str | None) -> str:
    return MASK + (hint or "")
