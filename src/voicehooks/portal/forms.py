"""Subscription forms: from form fields to the API's request bodies, and the API's errors back.

The form is checked by the same models and services as the API, so its rules and messages
are the API's; only the field names differ (a form has `channel_id` and status checkboxes
where the API has `eventFilters[i]`).
"""

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError
from starlette.datastructures import FormData

from voicehooks.errors import FieldError, field_path
from voicehooks.portal.web import text_field
from voicehooks.subscriptions.schemas import SubscriptionCreate, SubscriptionUpdate
from voicehooks.voice import CALL_STATUSES, EVENTS

# Every status, in the order of the events' lists, each with the events that report it.
ALL_STATUSES: tuple[str, ...] = tuple(
    dict.fromkeys(status for event in EVENTS for status in CALL_STATUSES[event])
)
_FILTER_INDEX = re.compile(r"^eventFilters\[(\d+)\]")
_FORM_NAMES = {"signingKey": "signing_key", "event": "event", "url": "url", "service": "event"}


@dataclass
class SubscriptionForm:
    """What the user typed, and what is wrong with it, per field ("" for the whole form)."""

    event: str = "voice.inbound"
    url: str = ""
    signing_key: str = ""
    channel_id: str = ""
    statuses: list[str] = field(default_factory=list)
    errors: dict[str, list[str]] = field(default_factory=dict)
    # The form field behind each entry of `eventFilters`, in order.
    filter_fields: list[str] = field(default_factory=list)

    @classmethod
    def read(cls, form: FormData) -> "SubscriptionForm":
        statuses = [value for value in form.getlist("statuses") if isinstance(value, str)]
        return cls(
            event=text_field(form, "event") or "voice.inbound",
            url=text_field(form, "url"),
            signing_key=text_field(form, "signing_key"),
            channel_id=text_field(form, "channel_id"),
            statuses=list(dict.fromkeys(statuses)),
        )

    def event_filters(self) -> list[dict[str, str]]:
        filters = []
        self.filter_fields = []
        if self.channel_id:
            filters.append({"key": "channelId", "value": self.channel_id})
            self.filter_fields.append("channel_id")
        for status in self.statuses:
            filters.append({"key": "status", "value": status})
            self.filter_fields.append("statuses")
        return filters

    def add_errors(self, errors: Sequence[FieldError]) -> None:
        for error in errors:
            self.errors.setdefault(self._form_field(error.field), []).append(error.message)

    def add_validation_error(self, exc: ValidationError) -> None:
        self.add_errors(
            [
                FieldError(field=field_path(list(error["loc"])), message=error["msg"])
                for error in exc.errors()
            ]
        )

    def _form_field(self, api_field: str) -> str:
        found = _FILTER_INDEX.match(api_field)
        if found is not None:
            index = int(found.group(1))
            return self.filter_fields[index] if index < len(self.filter_fields) else "statuses"
        if api_field == "eventFilters":
            return "statuses"
        return _FORM_NAMES.get(api_field.split(".", 1)[0].split("[", 1)[0], "")

    def create_body(self) -> SubscriptionCreate | None:
        """The API's create body, or None with `errors` filled in."""
        raw: dict[str, Any] = {
            "service": "channels",
            "event": self.event,
            "url": self.url,
            "eventFilters": self.event_filters(),
        }
        if self.signing_key:
            raw["signingKey"] = self.signing_key
        try:
            return SubscriptionCreate.model_validate(raw)
        except ValidationError as exc:
            self.add_validation_error(exc)
            return None

    def update_body(self, current_url: str) -> SubscriptionUpdate | None:
        raw: dict[str, Any] = {"eventFilters": self.event_filters()}
        if self.url != current_url:
            raw["url"] = self.url
        try:
            return SubscriptionUpdate.model_validate(raw)
        except ValidationError as exc:
            self.add_validation_error(exc)
            return None


def filters_in_words(event_filters: Sequence[Any]) -> str:
    """`[{channelId: …}, {status: a}, {status: b}]` → "channel …, when a or b"."""
    channel = next((f.value for f in event_filters if f.key == "channelId"), None)
    statuses = [f.value for f in event_filters if f.key == "status"]
    parts = [f"channel {channel}" if channel else "any channel"]
    parts.append("status " + " or ".join(statuses) if statuses else "every status")
    return ", ".join(parts)
