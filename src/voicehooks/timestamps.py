"""RFC 3339 timestamps in request bodies: with an offset, and within what UTC can hold."""

import re
from datetime import UTC, datetime
from typing import Annotated

from pydantic import AfterValidator, AwareDatetime, BeforeValidator

# RFC 3339 §5.6 date-time, the form JSON Schema's `format: date-time` names: seconds and a
# time zone are required. pydantic alone also takes numbers and numeric strings (Unix
# seconds), a space for the `T` and times without seconds; even its strict mode takes
# "1700000000" from JSON.
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def rfc3339_string(value: object) -> object:
    if not isinstance(value, str) or not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 date-time string with a time zone")
    return value


def in_utc(value: datetime) -> datetime:
    """The same instant in UTC; refuses instants that UTC cannot hold (year 0 or 10000)."""
    if value.tzinfo is None:
        raise ValueError("needs a UTC offset")
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise ValueError("out of range") from None


Timestamp = Annotated[AwareDatetime, BeforeValidator(rfc3339_string), AfterValidator(in_utc)]
