"""The states of subscriptions and deliveries, as stored and as the API shows them (SPEC §2)."""

from enum import StrEnum


class SubscriptionStatus(StrEnum):
    ACTIVE = "active"
    INACTIVE = "inactive"


class DeliveryState(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"


class Verdict(StrEnum):
    """What an attempt means for its delivery."""

    SUCCEEDED = "succeeded"
    RETRY = "retry"  # pending, due again after a delay
    FAILED = "failed"  # final


# Why the pending deliveries of a deactivated subscription ended without an attempt.
INACTIVE_ERROR = "subscription inactive"
