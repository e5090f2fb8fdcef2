"""Keyset pagination: opaque page tokens that point after the last row of a page."""

import base64
import binascii
import json
import uuid
from datetime import datetime
from typing import Annotated

from fastapi import Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from voicehooks.api.problems import invalid_field
from voicehooks.api.timestamps import in_utc
from voicehooks.db.keyset import Cursor

Limit = Annotated[int, Query(ge=1, le=100, description="Page size, 1–100.")]
PageToken = Annotated[
    str | None,
    Query(
        alias="pageToken",
        max_length=200,
        description="`nextPageToken` of the previous page.",
    ),
]


def encode_page_token(created_at: datetime, row_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(row_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_page_token(token: str | None) -> Cursor | None:
    if token is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        created_at, row_id = json.loads(raw)
        cursor = (in_utc(datetime.fromisoformat(created_at)), uuid.UUID(row_id))
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise invalid_field("pageToken", "not a page token of this list") from None
    return cursor


def encode_sequence_token(sequence: int) -> str:
    """A page token for lists ordered by a sequence number (ingestion order)."""
    return base64.urlsafe_b64encode(json.dumps([sequence]).encode()).decode().rstrip("=")


def decode_sequence_token(token: str | None) -> int | None:
    if token is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        (sequence,) = json.loads(raw)
    except (ValueError, TypeError, binascii.Error, UnicodeDecodeError):
        raise invalid_field("pageToken", "not a page token of this list") from None
    if not isinstance(sequence, int) or isinstance(sequence, bool):
        raise invalid_field("pageToken", "not a page token of this list")
    return sequence


def page_response(page: BaseModel) -> JSONResponse:
    """A page as JSON; `nextPageToken` is left out entirely on the last page."""
    body = page.model_dump(mode="json", by_alias=True)
    if body.get("nextPageToken") is None:
        body.pop("nextPageToken", None)
    return JSONResponse(body)
