"""Signing keys encrypted at rest (SPEC §2, §5): AES-256-GCM under a ring of keys.

The ring comes from VOICEHOOKS_ENCRYPTION_KEYS: comma-separated base64 32-byte keys; the first
encrypts, every one decrypts, so a new key can be put first while rows written under the old
one are re-encrypted (`voicehooks rotate-encryption-key`).

A stored value is a token `v1.<key id>.<base64url(nonce ‖ ciphertext ‖ tag)>`. The key id (the
first 8 hex digits of the key's SHA-256) names the key that decrypts it, so decryption never
tries keys in turn, and a token under a key that is not in the ring says so. The ciphertext is
bound to its subscription (associated data), so a token copied onto another row does not
decrypt there. Nothing here reads the environment or touches the database.
"""

import base64
import binascii
import hashlib
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

FORMAT = "v1"  # the first part of every stored value
KEY_BYTES = 32
NONCE_BYTES = 12  # 96 random bits per encryption, as GCM expects
_PURPOSE = b"voicehooks signing key\x00"  # keeps these ciphertexts from serving another purpose


class EncryptionConfigError(ValueError):
    """The encryption keys are missing or malformed; the message never holds key material."""


class UndecryptableError(Exception):
    """A stored value that this ring cannot decrypt (key not in the ring, or not its row)."""


def generate_key() -> str:
    """A new random key in the form VOICEHOOKS_ENCRYPTION_KEYS takes (base64 of 32 bytes)."""
    return base64.b64encode(os.urandom(KEY_BYTES)).decode()


def _key_id(key: bytes) -> str:
    return hashlib.sha256(key).hexdigest()[:8]


def _decode_key(text: str, position: int) -> bytes:
    # Both base64 alphabets are accepted (`openssl rand -base64 32` gives the standard one).
    normalized = text.replace("-", "+").replace("_", "/")
    normalized += "=" * (-len(normalized) % 4)
    try:
        key = base64.b64decode(normalized, validate=True)
    except (binascii.Error, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise EncryptionConfigError(
            f"VOICEHOOKS_ENCRYPTION_KEYS: key {position} is not the base64 of {KEY_BYTES} bytes"
        )
    return key


def _associated_data(bound_to: uuid.UUID) -> bytes:
    return _PURPOSE + bound_to.bytes


@dataclass(frozen=True, slots=True)
class KeyRing:
    primary_id: str
    _ciphers: Mapping[str, AESGCM]

    @classmethod
    def parse(cls, setting: str) -> "KeyRing":
        """The ring of a VOICEHOOKS_ENCRYPTION_KEYS value; the first key encrypts."""
        texts = [part.strip() for part in setting.split(",") if part.strip()]
        if not texts:
            raise EncryptionConfigError("VOICEHOOKS_ENCRYPTION_KEYS holds no key")
        keys: dict[str, bytes] = {}
        for position, text in enumerate(texts, start=1):
            key = _decode_key(text, position)
            key_id = _key_id(key)
            if keys.setdefault(key_id, key) != key:  # the same key twice is harmless; a clash not
                raise EncryptionConfigError(
                    f"VOICEHOOKS_ENCRYPTION_KEYS: key {position} has the id of an earlier one; "
                    "generate another"
                )
        primary_id = next(iter(keys))
        return cls(primary_id, {key_id: AESGCM(key) for key_id, key in keys.items()})

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._ciphers)

    def encrypt(self, plaintext: str, *, bound_to: uuid.UUID) -> str:
        """A token of `plaintext` under the first key, decryptable only for `bound_to`."""
        nonce = os.urandom(NONCE_BYTES)
        sealed = self._ciphers[self.primary_id].encrypt(
            nonce, plaintext.encode(), _associated_data(bound_to)
        )
        payload = base64.urlsafe_b64encode(nonce + sealed).decode().rstrip("=")
        return f"{FORMAT}.{self.primary_id}.{payload}"

    def decrypt(self, token: str, *, bound_to: uuid.UUID) -> str:
        """The plaintext of a token of `bound_to`; UndecryptableError when it cannot be had."""
        version, _, rest = token.partition(".")
        key_id, _, payload = rest.partition(".")
        if version != FORMAT or not payload:
            raise UndecryptableError("not an encrypted signing key")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise UndecryptableError(f"encrypted under key {key_id}, which is not configured")
        try:
            raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            plaintext = cipher.decrypt(
                raw[:NONCE_BYTES], raw[NONCE_BYTES:], _associated_data(bound_to)
            )
        except (InvalidTag, binascii.Error, ValueError):
            raise UndecryptableError(
                f"does not decrypt under key {key_id} (altered, or another row's)"
            ) from None
        return plaintext.decode()

    def is_current(self, token: str) -> bool:
        """Is the token under the key that encrypts (nothing to re-encrypt)?"""
        return token.startswith(self.token_prefix)

    @property
    def token_prefix(self) -> str:
        return f"{FORMAT}.{self.primary_id}."
