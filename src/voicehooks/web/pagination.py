"""Keyset pagination over HTTP: the query parameters of a list, and a page as JSON."""

from typing import Annotated

from fastapi import Query
from fastapi.responses import JSONResponse
from pydantic import BaseModel

Limit = Annotated[int, Query(ge=1, le=100, description="Page size, 1–100.")]
PageToken = Annotated[
    str | None,
    Query(
        alias="pageToken",
        max_length=200,
        description="`nextPageToken` of the previous page.",
    ),
]


def page_response(page: BaseModel) -> JSONResponse:
    """A page as JSON; `nextPageToken` is left out entirely on the last page."""
    body = page.model_dump(mode="json", by_alias=True)
    if body.get("nextPageToken") is None:
        body.pop("nextPageToken", None)
    return JSONResponse(body)
