"""Schemathesis hooks (SCHEMATHESIS_HOOKS) for the run over the public document.

The document says everything a JSON Schema can say; a few rules of SPEC §2 depend on the
world or on other fields, and are written in the descriptions instead: a URL's host must not
resolve to an internal address, a status filter must be a status of the subscription's event,
at most one channelId filter, and a page token is one the list handed out. Generated requests
that the document calls valid are moved onto those rules here, so that a valid request that
the service refuses is a finding. Invalid requests (negative mode) are left as generated.
"""

import random
import uuid
from datetime import UTC, datetime
from typing import Any

import schemathesis

from voicehooks.page_tokens import encode_page_token, encode_sequence_token
from voicehooks.voice import CALL_STATUSES

# Public, deliverable targets that need no DNS answer now (a host that does not resolve yet
# is accepted too, but asking the resolver costs time on a machine without network).
TARGETS = ("https://93.184.215.14/hook", "https://[2606:2800:21f:cb07:6820:80da:af6b:8b2c]:8443/x")


def _positive(case: Any) -> bool:
    meta = getattr(case, "meta", None)
    return meta is not None and meta.generation.mode.is_positive


def _fix_filters(filters: Any, event: str | None) -> Any:
    if not isinstance(filters, list):
        return filters
    statuses = CALL_STATUSES.get(event or "", CALL_STATUSES["voice.inbound"])
    fixed, channel_seen = [], False
    for item in filters:
        if not isinstance(item, dict):
            fixed.append(item)
            continue
        if item.get("key") == "channelId":
            if channel_seen:
                continue  # at most one channelId filter
            channel_seen = True
        elif item.get("key") == "status" and item.get("value") not in statuses:
            item = {**item, "value": statuses[len(fixed) % len(statuses)]}
        if item not in fixed:
            fixed.append(item)
    return fixed


@schemathesis.hook
def before_call(ctx: Any, case: Any, **kwargs: Any) -> None:
    """Just before sending: whatever phase drew the case (the stateful one mutates drawn
    cases further), what is sent keeps to those rules."""
    if not _positive(case):
        return
    body = case.body
    if isinstance(body, dict) and case.path.endswith("/recover"):
        if isinstance(body.get("since"), str):
            body["since"] = "2026-01-01T00:00:00Z"  # `since` must not be in the future
    elif isinstance(body, dict):
        if isinstance(body.get("url"), str):
            body["url"] = random.choice(TARGETS)
        if "eventFilters" in body:
            # Updates do not name the event: a status of voice.inbound suits both events.
            body["eventFilters"] = _fix_filters(body["eventFilters"], body.get("event"))
    query = case.query
    if isinstance(query, dict) and isinstance(query.get("pageToken"), str):
        if case.path.endswith("/deliveries"):
            query["pageToken"] = encode_sequence_token(random.randint(1, 2**62))
        else:
            query["pageToken"] = encode_page_token(datetime.now(UTC), uuid.uuid4())
