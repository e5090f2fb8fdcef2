"""RFC 3339 timestamps in request bodies: with an offset, and within what UTC can hold."""

from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime


def in_utc(value: datetime) -> datetime:
    """The same instant in UTC; refuses instants that UTC cannot hold (year 0 or 10000)."""
    if value.tzinfo is None:
        raise ValueError("needs a UTC offset")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range") from None


Timestamp = Annotated[AwareDatetime, AfterValidator(in_utc)]
