"""The dispatchers' wake-up channel: what the queue's writers tell them, delivered on commit.

An empty payload means "deliveries may be due"; `cancel:<subscription id>` means "drop what you
hold of this subscription": it was deleted or deactivated, and nothing new may be sent for it.
"""

import uuid

import asyncpg

DELIVERIES_CHANNEL = "voicehooks_deliveries"
_CANCEL = "cancel:"


def cancel_payload(subscription_id: uuid.UUID) -> str:
    return f"{_CANCEL}{subscription_id}"


def cancelled_subscription(payload: str) -> uuid.UUID | None:
    """The subscription a notification cancels; None for a plain wake-up (or garbage)."""
    if not payload.startswith(_CANCEL):
        return None
    try:
        return uuid.UUID(payload[len(_CANCEL) :])
    except ValueError:
        return None


async def wake_dispatchers(connection: asyncpg.Connection) -> None:
    """Deliveries may be due: the dispatchers hear it when the caller's transaction commits."""
    await connection.execute(f"NOTIFY {DELIVERIES_CHANNEL}")


async def cancel_subscriptions(
    connection: asyncpg.Connection, subscription_ids: list[uuid.UUID]
) -> None:
    """Every dispatcher drops what it holds of these subscriptions (on commit)."""
    for subscription_id in subscription_ids:
        await connection.execute(
            "SELECT pg_notify($1, $2)", DELIVERIES_CHANNEL, cancel_payload(subscription_id)
        )
