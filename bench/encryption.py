#!/usr/bin/env python3
"""Cost of encrypted signing keys on the dispatcher's hot path, per delivery.

Each attempt needs its subscription's signing key (and any replaced key still in its overlap)
in clear. The dispatcher decrypts them through an LRU cache keyed by the stored ciphertext
(voicehooks.dispatch.keys.SigningKeys); this measures, in this process, on this machine:

  decrypt       one AES-256-GCM decryption of a stored key (KeyRing.decrypt), no cache
  uncached      SigningKeys.of() with the cache disabled: what each attempt would pay without it
  cached        SigningKeys.of() on a warm cache: what each attempt pays
  signing       signature_headers(): the HMACs every attempt computes anyway, for scale

each for a subscription with no replaced key and with two in their overlap. Every figure is
the median of --runs runs of --number calls, with the fastest and slowest run (the spread).

    python bench/encryption.py [--runs 7] [--number 20000]
"""

import argparse
import base64
import os
import statistics
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime

from voicehooks.dispatch.keys import SigningKeys
from voicehooks.dispatch.signing import signature_headers
from voicehooks.encryption import KeyRing
from voicehooks.queue.claim import ClaimedDelivery

BODY = (
    b'{"service":"channels","event":"voice.inbound","payload":{"id":"call-1",'
    b'"channelId":"b827924e-9789-4c2f-a4d5-b352175354f6","status":"ringing",'
    b'"direction":"incoming","from":"+31612345678","to":"+31201234567"}}'
)
URL = "https://example.com/hook"


def _delivery(ring: KeyRing, keys: list[str]) -> ClaimedDelivery:
    subscription_id = uuid.uuid4()
    tokens = [ring.encrypt(key, bound_to=subscription_id) for key in keys]
    return ClaimedDelivery(
        id=uuid.uuid4(),
        created_at=datetime.now(UTC),
        attempts_made=0,
        attempts_allowed=None,
        subscription_id=subscription_id,
        workspace_id=uuid.uuid4(),
        event_id=uuid.uuid4(),
        call_id="call-1",
        url=URL,
        target_host="example.com",
        encrypted_key=tokens[0],
        encrypted_previous_keys=tuple(tokens[1:]),
        body=BODY,
        event="voice.inbound",
        claim_token=uuid.uuid4(),
    )


def _measure(call: Callable[[], object], runs: int, number: int) -> tuple[float, float, float]:
    """(median, fastest, slowest) microseconds per call over `runs` runs of `number` calls."""
    call()  # warm up
    per_call = []
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(number):
            call()
        per_call.append((time.perf_counter() - started) / number * 1e6)
    return statistics.median(per_call), min(per_call), max(per_call)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--number", type=int, default=20000)
    args = parser.parse_args()

    ring = KeyRing.parse(",".join(base64.b64encode(os.urandom(32)).decode() for _ in range(2)))
    print(f"{'':34} {'median':>8} {'fastest':>8} {'slowest':>8}  µs per delivery")
    for label, keys in (
        ("no replaced key", ["a-signing-key-" + "x" * 29]),
        ("two replaced keys", [f"signing-key-{n}-" + "x" * 28 for n in range(3)]),
    ):
        delivery = _delivery(ring, keys)
        uncached, cached = SigningKeys(ring, cache_size=0), SigningKeys(ring)
        plain = cached.of(delivery)
        assert plain is not None and uncached.of(delivery) == plain
        figures = {
            "decrypt (one key)": lambda d=delivery: ring.decrypt(
                d.encrypted_key, bound_to=d.subscription_id
            ),
            "uncached SigningKeys.of": lambda d=delivery, k=uncached: k.of(d),
            "cached SigningKeys.of": lambda d=delivery, k=cached: k.of(d),
            "signing (for scale)": lambda d=delivery, p=plain: signature_headers(
                delivery_id=str(d.id),
                timestamp=1_700_000_000,
                url=URL,
                body=BODY,
                signing_key=p[0],
                previous_keys=p[1],
            ),
        }
        print(label)
        for name, call in figures.items():
            median, fastest, slowest = _measure(call, args.runs, args.number)
            print(f"  {name:32} {median:8.2f} {fastest:8.2f} {slowest:8.2f}")


if __name__ == "__main__":
    main()
