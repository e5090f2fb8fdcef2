"""Webhook signatures (SPEC §4): Bird's `messagebird-signature` and Standard Webhooks'."""

import base64
import hashlib
import hmac
from collections.abc import Sequence


def bird_signature(signing_key: str, timestamp: int, url: str, body: bytes) -> str:
    """base64(HMAC-SHA256(key, "{timestamp}\\n{url}\\n" + SHA-256(body) as raw bytes))."""
    message = f"{timestamp}\n{url}\n".encode() + hashlib.sha256(body).digest()
    return base64.b64encode(hmac.digest(signing_key.encode(), message, "sha256")).decode()


def standard_signature(signing_key: str, message_id: str, timestamp: int, body: bytes) -> str:
    """`v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}"))."""
    message = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.digest(signing_key.encode(), message, "sha256")).decode()


def signature_headers(
    *,
    delivery_id: str,
    timestamp: int,
    url: str,
    body: bytes,
    signing_key: str,
    previous_keys: Sequence[str] = (),
) -> dict[str, str]:
    """Headers of one attempt; replaced keys still in their overlap add `webhook-signature`s."""
    standard = " ".join(
        standard_signature(key, delivery_id, timestamp, body)
        for key in (signing_key, *previous_keys)
    )
    return {
        "messagebird-signature": bird_signature(signing_key, timestamp, url, body),
        "messagebird-request-timestamp": str(timestamp),
        "messagebird-request-id": delivery_id,
        "webhook-id": delivery_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": standard,
    }
