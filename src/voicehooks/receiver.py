"""Checking a delivery on the receiving side (SPEC §7): `verify(body, headers, keys=...)`.

A receiver calls `verify` with the raw request body and headers as they arrived; it returns
the delivered event, or raises `InvalidSignature` saying what is wrong. It imports only the
standard library (and the signing rule the dispatcher signs with, which is stdlib too), so a
receiver needs none of the server's dependencies: the package installed with
`pip install --no-deps` is enough.

    from voicehooks.receiver import InvalidSignature, verify

    try:
        event = verify(body, headers, keys=["the subscription's signingKey"],
                       url="https://example.com/hook")  # url: also check messagebird-signature
    except InvalidSignature as error:
        ...  # answer 400; str(error) says why

Both schemes sign with the signing key's UTF-8 bytes, exactly as it was set on the
subscription: no base64 decoding, no `whsec_` prefix.
"""

import hmac
import json
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from voicehooks.dispatch.signing import bird_signature, hmac_base64, standard_message

__all__ = ["DEFAULT_TOLERANCE", "InvalidSignature", "verify"]

DEFAULT_TOLERANCE = 300
# More entries than any rotation gives (one per key still in its overlap): refused unread.
MAX_SIGNATURE_ENTRIES = 64
_HEADERS = (
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
    "messagebird-signature",
    "messagebird-request-timestamp",
)

Headers = Mapping[str, str] | Mapping[bytes, bytes] | Iterable[tuple[str | bytes, str | bytes]]


class InvalidSignature(ValueError):
    """The delivery must not be trusted. The message says why; `reason` names the check:
    `missing-header`, `malformed-header`, `timestamp`, `no-match`, `body-changed`, `url`,
    `not-an-event`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def verify(
    body: bytes | str,
    headers: Headers,
    *,
    keys: str | Sequence[str],
    url: str | None = None,
    tolerance: float | None = DEFAULT_TOLERANCE,
) -> dict[str, Any]:
    """The delivered event (`{"service", "event", "payload"}`) when the delivery is genuine.

    - `body`: the raw request body, bytes (or str, taken as UTF-8), exactly as received.
    - `headers`: any mapping or list of pairs; names in any case (a dict, Starlette, Flask,
      Django or aiohttp headers, `http.server`'s message).
    - `keys`: the subscription's signing key, or several (during a rotation: the new one and
      the old one); a delivery is accepted when any of them signed it.
    - `url`: when given, `messagebird-signature` (Bird's scheme, which signs the URL too) must
      verify as well, for this URL exactly as the subscription has it.
    - `tolerance`: how far (seconds) the timestamps may be from now; None skips that check
      (to look at a saved delivery later).

    Raises `InvalidSignature` (a ValueError) otherwise; TypeError or ValueError only for
    arguments of the wrong kind (no keys, a parsed body).
    """
    raw = _raw_body(body)
    key_list = _keys(keys)
    found = _wanted_headers(headers)
    delivery_id = _header(found, "webhook-id")
    stamp = _unix_seconds(found, "webhook-timestamp")
    signatures = _v1_signatures(_header(found, "webhook-signature"))

    signed_by = _standard_key(key_list, delivery_id, stamp, raw, signatures)
    if signed_by is None:
        raise _no_match(key_list, delivery_id, stamp, raw, signatures)
    if url is not None:
        bird_stamp = _unix_seconds(found, "messagebird-request-timestamp")
        _check_bird(key_list, bird_stamp, str(url), raw, _header(found, "messagebird-signature"))
        _check_age("messagebird-request-timestamp", bird_stamp, tolerance)
    _check_age("webhook-timestamp", stamp, tolerance)
    return _event(raw)


def _raw_body(body: object) -> bytes:
    if isinstance(body, str):
        return body.encode("utf-8", "surrogatepass")
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body)
    raise TypeError(
        f"body must be the raw request body (bytes or str), not {type(body).__name__}: "
        "a parsed and re-encoded body no longer matches its signature"
    )


def _keys(keys: object) -> list[str]:
    key_list = [keys] if isinstance(keys, str) else list(keys)  # type: ignore[call-overload]
    if not key_list:
        raise ValueError("keys: give at least one signing key")
    for key in key_list:
        if not isinstance(key, str) or not key:
            raise TypeError("keys: each one is a subscription's signingKey, a non-empty str")
    return key_list


def _text(value: object) -> str:
    return value.decode("latin-1") if isinstance(value, bytes | bytearray) else str(value)


def _wanted_headers(headers: Headers) -> dict[str, list[str]]:
    """The values of the headers `verify` reads, by lower-case name, every occurrence."""
    items: Iterable[tuple[object, object]] = (
        headers.items() if hasattr(headers, "items") else headers
    )
    found: dict[str, list[str]] = {}
    for name, value in items:
        lowered = _text(name).lower()
        if lowered in _HEADERS:
            found.setdefault(lowered, []).append(_text(value).strip())
    return found


def _header(found: dict[str, list[str]], name: str) -> str:
    values = found.get(name)
    if not values or not values[0]:
        state = "empty" if values else "missing"
        raise InvalidSignature(
            "missing-header",
            f"header {name} is {state}: not a voicehooks delivery, or something on the way "
            "dropped it",
        )
    if len(set(values)) > 1:
        raise InvalidSignature(
            "malformed-header", f"header {name} appears {len(values)} times with different values"
        )
    return values[0]


def _unix_seconds(found: dict[str, list[str]], name: str) -> int:
    value = _header(found, name)
    if not (value.isascii() and value.isdigit() and len(value) <= 12):
        raise InvalidSignature(
            "malformed-header", f"header {name} is {value[:40]!r}, not a time in Unix seconds"
        )
    return int(value)


def _check_age(name: str, stamp: int, tolerance: float | None) -> None:
    if tolerance is None:
        return
    age = int(time.time()) - stamp  # whole seconds, as timestamps are
    if abs(age) <= tolerance:
        return
    when = f"{age} s old" if age > 0 else f"{-age} s in the future"
    raise InvalidSignature(
        "timestamp",
        f"{name} is {when}, beyond the tolerance of {tolerance:g} s: a replayed or delayed "
        "request, or this machine's clock is off",
    )


def _v1_signatures(header: str) -> list[bytes]:
    entries = header.split()
    if len(entries) > MAX_SIGNATURE_ENTRIES:
        raise InvalidSignature(
            "malformed-header", f"webhook-signature has {len(entries)} entries, too many to check"
        )
    signatures = []
    for entry in entries:
        version, comma, signature = entry.partition(",")
        if version == "v1" and comma and signature:
            signatures.append(signature.encode("utf-8", "surrogatepass"))
    if not signatures:
        raise InvalidSignature(
            "malformed-header",
            "webhook-signature has no v1 entry (expected `v1,<base64>`, separated by spaces)",
        )
    return signatures


def _matches(expected: str, candidates: Iterable[bytes]) -> bool:
    """Constant-time comparison with every candidate (no early exit on a match)."""
    wanted = expected.encode()
    matched = False
    for candidate in candidates:
        matched |= hmac.compare_digest(wanted, candidate)
    return matched


def _standard_key(
    keys: list[str], delivery_id: str, stamp: int, body: bytes, signatures: list[bytes]
) -> str | None:
    message = standard_message(delivery_id, stamp, body)
    for key in keys:
        if _matches(hmac_base64(key, message), signatures):
            return key
    return None


def _no_match(
    keys: list[str], delivery_id: str, stamp: int, body: bytes, signatures: list[bytes]
) -> InvalidSignature:
    """Why no signature matched: a re-serialized body (which we can tell), or anything else."""
    try:
        parsed = json.loads(body)
        compact = json.dumps(parsed, ensure_ascii=False, separators=(",", ":")).encode()
    except (ValueError, RecursionError):
        compact = body
    if compact != body and _standard_key(keys, delivery_id, stamp, compact, signatures):
        return InvalidSignature(
            "body-changed",
            "the body is not the one signed: it matches once re-serialized as compact JSON, so "
            "something parsed and re-encoded it on the way; verify the raw request body",
        )
    count = f"{len(keys)} key" + ("s" if len(keys) > 1 else "")
    return InvalidSignature(
        "no-match",
        f"no webhook-signature entry matches this body with the {count} given: the body "
        "changed on the way, or another key signed it (the subscription's signingKey exactly "
        "as set; during a rotation give the new key and the old one)",
    )


def _check_bird(keys: list[str], stamp: int, url: str, body: bytes, signature: str) -> None:
    candidates = [signature.encode("utf-8", "surrogatepass")]
    for key in keys:
        if _matches(bird_signature(key, stamp, url, body), candidates):
            return
    raise InvalidSignature(
        "url",
        f"messagebird-signature does not match for the URL {url}, though webhook-signature "
        "does: give the subscription's URL exactly as registered (scheme, host, port, path, "
        "query), and after a rotation the new key (Bird's scheme signs with it alone)",
    )


def _event(body: bytes) -> dict[str, Any]:
    try:
        event = json.loads(body)
    except (ValueError, RecursionError):
        event = None
    if not isinstance(event, dict):
        raise InvalidSignature(
            "not-an-event", "the signature verifies, but the body is not a JSON object"
        )
    return event
