"""The dispatcher's signing keys: decrypted from the claimed rows, cached per ciphertext.

Claims bring the same subscriptions again and again; an LRU cache keyed by the stored
ciphertext and its subscription (the ciphertext is bound to it) turns the decryption of each
attempt into a lookup (bench/encryption.py measures both). A new or re-encrypted key is a new
ciphertext, so the cache never answers with a replaced key.
"""

import functools
import uuid

import structlog

from voicehooks.encryption import KeyRing, UndecryptableError
from voicehooks.queue.claim import ClaimedDelivery

log = structlog.get_logger("voicehooks.dispatch")

# The error of an attempt that was not sent because its keys could not be decrypted.
UNDECRYPTABLE_ERROR = "signing key cannot be decrypted (encryption key missing?)"
CACHE_SIZE = 4096
# Subscriptions whose undecryptable keys were logged: each once, in a bounded memory.
_REPORTED_LIMIT = 10_000


class SigningKeys:
    def __init__(self, key_ring: KeyRing, cache_size: int = CACHE_SIZE) -> None:
        self._key_ring = key_ring
        self._decrypt = functools.lru_cache(maxsize=cache_size)(self._decrypt_uncached)
        self._reported: set[uuid.UUID] = set()

    def _decrypt_uncached(self, token: str, subscription_id: uuid.UUID) -> str:
        return self._key_ring.decrypt(token, bound_to=subscription_id)

    def of(self, delivery: ClaimedDelivery) -> tuple[str, tuple[str, ...]] | None:
        """The current and the still-valid previous keys of a delivery in clear, or None when
        one of them cannot be decrypted: then nothing is sent, as a signature with a wrong or
        missing key would only be refused by the receiver."""
        subscription_id = delivery.subscription_id
        try:
            key = self._decrypt(delivery.encrypted_key, subscription_id)
            previous = tuple(
                self._decrypt(token, subscription_id) for token in delivery.encrypted_previous_keys
            )
        except UndecryptableError as exc:
            self._report(subscription_id, exc)
            return None
        return key, previous

    def _report(self, subscription_id: uuid.UUID, exc: UndecryptableError) -> None:
        if subscription_id in self._reported:
            return
        if len(self._reported) >= _REPORTED_LIMIT:
            self._reported.clear()
        self._reported.add(subscription_id)
        log.error(
            "signing_key_undecryptable",
            subscription_id=str(subscription_id),
            reason=str(exc),
            configured_key_ids=list(self._key_ring.key_ids),
        )
