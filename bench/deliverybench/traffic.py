"""What the benchmark sends: delivery bodies and headers as the service renders them, and the
ingestion batches of the end-to-end phases."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from typing import Any

BATCH_SIZE = 1000
EVENT = "voice.inbound"
CHANNELS = 8  # channel ids the e2e events are spread over


def delivery_body(payload: dict[str, Any]) -> bytes:
    """The body the service sends (SPEC §4), rendered as the service renders it."""
    return json.dumps(
        {"service": "channels", "event": EVENT, "payload": payload},
        ensure_ascii=False,
        separators=(",", ":"),
    ).encode()


def representative_headers(delivery_id: str) -> dict[str, str]:
    """Headers of the same shape and size as a signed delivery's."""
    timestamp = str(int(time.time()))
    signature = secrets.token_urlsafe(32)
    return {
        "content-type": "application/json",
        "user-agent": "voicehooks/bench",
        "messagebird-signature": signature,
        "messagebird-request-timestamp": timestamp,
        "messagebird-request-id": delivery_id,
        "webhook-id": delivery_id,
        "webhook-timestamp": timestamp,
        "webhook-signature": "v1," + signature,
    }


def e2e_batches(workspace: str, total: int, channels: list[str] | None = None) -> list[bytes]:
    """`total` events with unique call ids, round robin over the channels, as batch bodies of
    `POST /internal/v1/events/batch`."""
    run = secrets.token_hex(4)
    channels = channels or [str(uuid.uuid4()) for _ in range(CHANNELS)]
    batches: list[bytes] = []
    for start in range(0, total, BATCH_SIZE):
        items = [
            {
                "workspaceId": workspace,
                "event": EVENT,
                "payload": {
                    "id": f"e2e-{run}-{i}",
                    "channelId": channels[i % len(channels)],
                    "status": "ringing",
                },
            }
            for i in range(start, min(total, start + BATCH_SIZE))
        ]
        batches.append(json.dumps({"events": items}).encode())
    return batches
