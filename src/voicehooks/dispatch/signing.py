"""Webhook signatures (SPEC §4): Bird's `messagebird-signature` and Standard Webhooks'.

One rule for both sides: the dispatcher signs with it and `voicehooks.receiver` checks with it,
so this module imports nothing but the standard library (a receiver has no server installed).

Every attempt signs its body with two or more HMACs: this is on the dispatcher's hot path, so
each signed message is built once as bytes and encoded with binascii directly.
"""

import hashlib
import hmac
from binascii import b2a_base64
from collections.abc import Sequence


def hmac_base64(key: str, message: bytes) -> str:
    """base64(HMAC-SHA256(key as UTF-8 bytes, message)): the MAC of both schemes."""
    return b2a_base64(hmac.digest(key.encode(), message, "sha256"), newline=False).decode()


def bird_signature(signing_key: str, timestamp: int | str, url: str, body: bytes) -> str:
    """base64(HMAC-SHA256(key, "{timestamp}\\n{url}\\n" + SHA-256(body) as raw bytes))."""
    return hmac_base64(
        signing_key, f"{timestamp}\n{url}\n".encode() + hashlib.sha256(body).digest()
    )


def standard_message(delivery_id: str, timestamp: int | str, body: bytes) -> bytes:
    """What a Standard Webhooks signature signs: "{webhook-id}.{webhook-timestamp}.{body}"."""
    return f"{delivery_id}.{timestamp}.".encode() + body


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
    stamp = str(timestamp)
    # Standard Webhooks, per key: `v1,` + base64(HMAC-SHA256(key, "{id}.{timestamp}.{body}")).
    signed = standard_message(delivery_id, stamp, body)
    standard = " ".join("v1," + hmac_base64(key, signed) for key in (signing_key, *previous_keys))
    return {
        "messagebird-signature": bird_signature(signing_key, stamp, url, body),
        "messagebird-request-timestamp": stamp,
        "messagebird-request-id": delivery_id,
        "webhook-id": delivery_id,
        "webhook-timestamp": stamp,
        "webhook-signature": standard,
    }
