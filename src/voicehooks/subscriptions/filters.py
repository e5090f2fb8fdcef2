"""Event filter rules (SPEC §2): which `channelId`/`status` filters a subscription may have."""

import re
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from voicehooks.errors import FieldError
from voicehooks.voice import CALL_STATUSES

# The UUID form JSON Schema's `format: uuid` names (uuid.UUID also takes braces, URNs...).
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")


@dataclass(frozen=True)
class FilterSet:
    """Filters as matching sees them: one channel (or any) and a set of statuses (or any)."""

    channel_id: uuid.UUID | None
    statuses: tuple[str, ...]  # sorted; empty means every status


def parse_filters(
    event: str, filters: Sequence[tuple[str, str]], *, field: str = "eventFilters"
) -> tuple[FilterSet | None, list[FieldError]]:
    """Check (key, value) pairs against the event; return the filter set or the errors."""
    errors: list[FieldError] = []
    channel_id: uuid.UUID | None = None
    statuses: list[str] = []
    seen: set[tuple[str, str]] = set()
    allowed_statuses = CALL_STATUSES.get(event, ())
    for index, (key, value) in enumerate(filters):
        where = f"{field}[{index}]"
        if (key, value) in seen:
            errors.append(FieldError(field=where, message="duplicate filter"))
            continue
        seen.add((key, value))
        if key == "channelId":
            if channel_id is not None:
                errors.append(FieldError(field=f"{where}.key", message="at most one channelId"))
                continue
            if _UUID.fullmatch(value):
                channel_id = uuid.UUID(value)
            else:
                errors.append(FieldError(field=f"{where}.value", message="must be a UUID"))
        elif key == "status":
            if value not in allowed_statuses:
                errors.append(
                    FieldError(
                        field=f"{where}.value",
                        message=f"not a call status of {event}: {', '.join(allowed_statuses)}",
                    )
                )
            else:
                statuses.append(value)
        else:
            errors.append(
                FieldError(field=f"{where}.key", message="must be 'channelId' or 'status'")
            )
    if errors:
        return None, errors
    return FilterSet(channel_id, tuple(sorted(statuses))), []
