"""encrypt signing keys at rest

Every stored signing key, current and previous, becomes a token of voicehooks.encryption under
the first of VOICEHOOKS_ENCRYPTION_KEYS, bound to its subscription; `signing_key_hint` keeps
what responses show of the key (its last 4 characters when it has at least 16), so that
reading a subscription never needs the encryption key. The keys come in through the Alembic
configuration's attributes (`voicehooks migrate` and `serve` put them there); they are needed
only when there are rows to encrypt.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02 10:00:00
"""

import json
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.engine import Connection

from voicehooks.db.migrate import KEY_RING_ATTRIBUTE
from voicehooks.encryption import EncryptionConfigError, KeyRing

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 500

_PAGE = sa.text(
    "SELECT id, signing_key, previous_signing_keys FROM subscriptions"
    " WHERE id > :after ORDER BY id LIMIT :batch"
)
_WRITE = sa.text(
    "UPDATE subscriptions SET signing_key = :signing_key,"
    " previous_signing_keys = CAST(:previous AS jsonb), signing_key_hint = :hint"
    " WHERE id = :id"
)


def _hint(key: str) -> str | None:
    # The rule of subscriptions.schemas.signing_key_hint as of this revision, frozen here.
    return key[-4:] if len(key) >= 16 else None


def _key_ring(connection: Connection, purpose: str) -> KeyRing | None:
    """The configured ring; an error naming what needs it when there are rows and no ring."""
    key_ring: KeyRing | None = context.config.attributes.get(KEY_RING_ATTRIBUTE)
    if key_ring is None:
        count = connection.scalar(sa.text("SELECT count(*) FROM subscriptions"))
        if count:
            raise EncryptionConfigError(
                f"{count} subscriptions hold signing keys to {purpose}: "
                "set VOICEHOOKS_ENCRYPTION_KEYS"
            )
    return key_ring


def _rows(connection: Connection) -> Iterator[list[Any]]:
    """Every subscription's id and keys, in pages along the primary key."""
    after = uuid.UUID(int=0)
    while True:
        page = list(connection.execute(_PAGE, {"after": after, "batch": BATCH}))
        if not page:
            return
        yield page
        after = page[-1].id


def _entries(raw: object) -> list[dict[str, str]]:
    entries: list[dict[str, str]] = json.loads(raw) if isinstance(raw, str) else list(raw or [])  # type: ignore[call-overload]
    return entries


def _rewrite(transform: Any, hint: Any, purpose: str) -> None:
    connection = op.get_bind()
    key_ring = _key_ring(connection, purpose)
    if key_ring is None:
        return
    for page in _rows(connection):
        updates = []
        for row in page:
            current = transform(key_ring, row.signing_key, row.id)
            previous = [
                {**entry, "key": transform(key_ring, entry["key"], row.id)}
                for entry in _entries(row.previous_signing_keys)
            ]
            updates.append(
                {
                    "id": row.id,
                    "signing_key": current,
                    "previous": json.dumps(previous),
                    "hint": hint(row.signing_key),
                }
            )
        connection.execute(_WRITE, updates)


def _encrypt(key_ring: KeyRing, key: str, subscription_id: uuid.UUID) -> str:
    return key_ring.encrypt(key, bound_to=subscription_id)


def _decrypt(key_ring: KeyRing, token: str, subscription_id: uuid.UUID) -> str:
    return key_ring.decrypt(token, bound_to=subscription_id)


def upgrade() -> None:
    op.add_column("subscriptions", sa.Column("signing_key_hint", sa.Text(), nullable=True))
    # At this revision every stored key is in clear.
    _rewrite(_encrypt, _hint, "encrypt")


def downgrade() -> None:
    _rewrite(_decrypt, lambda _: None, "decrypt")
    op.drop_column("subscriptions", "signing_key_hint")
