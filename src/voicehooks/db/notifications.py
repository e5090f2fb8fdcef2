"""The dispatchers' wake-up channel: what writers of deliveries tell them, delivered on commit.

An empty payload means "deliveries may be due"; `cancel:<subscription id>` means "drop what you
hold of this subscription": it was deleted or deactivated, and nothing new may be sent for it.
"""

import uuid

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
