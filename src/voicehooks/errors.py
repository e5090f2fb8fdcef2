"""Errors that services raise for their callers to report: no web framework here.

Each carries what an RFC 9457 problem needs (status, detail, field errors, headers);
voicehooks.web.problems renders them for the API, and the portal as pages.
"""

from collections.abc import Sequence

from pydantic import BaseModel


# A pydantic model because the API's problem body embeds it as it is (its schema is named
# FieldError in the OpenAPI document: no docstring here, that would become its description).
class FieldError(BaseModel):
    field: str
    message: str


class ProblemError(Exception):
    """Raised anywhere below the endpoints; becomes a problem+json answer."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: Sequence[FieldError] | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = list(errors) if errors is not None else None
        self.headers = headers


class NotFound(ProblemError):
    def __init__(self, detail: str = "not found") -> None:
        super().__init__(404, detail)


class Conflict(ProblemError):
    def __init__(self, detail: str) -> None:
        super().__init__(409, detail)


class InvalidInput(ProblemError):
    def __init__(self, errors: Sequence[FieldError], detail: str = "validation failed") -> None:
        super().__init__(422, detail, errors=errors)


def invalid_field(field: str, message: str) -> InvalidInput:
    return InvalidInput([FieldError(field=field, message=message)])


def field_path(location: Sequence[int | str]) -> str:
    """("body", "eventFilters", 1, "value") → "eventFilters[1].value"."""
    parts = list(location)
    if parts and parts[0] in ("body", "query", "path", "header"):
        parts = parts[1:]
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path += f".{part}" if path else str(part)
    return path or "body"
