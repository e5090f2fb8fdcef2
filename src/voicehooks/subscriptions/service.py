"""Rules of webhook subscriptions: validation, the identical-set limit, key rotation, status."""

import secrets
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from voicehooks.config import Settings
from voicehooks.db.engine import session_driver_connection
from voicehooks.db.models import Subscription
from voicehooks.encryption import KeyRing, UndecryptableError
from voicehooks.errors import Conflict, InvalidInput, NotFound, ProblemError, invalid_field
from voicehooks.page_tokens import decode_page_token, encode_page_token
from voicehooks.queue import requeue
from voicehooks.states import INACTIVE_ERROR
from voicehooks.subscriptions.filters import FilterSet, parse_filters
from voicehooks.subscriptions.repository import SubscriptionRepository
from voicehooks.subscriptions.schemas import (
    EventFilter,
    SubscriptionCreate,
    SubscriptionOut,
    SubscriptionPage,
    SubscriptionUpdate,
    mask_signing_key,
    signing_key_hint,
)
from voicehooks.subscriptions.target_policy import TargetRefused, check_target_url
from voicehooks.tenancy.scope import WorkspaceScope

MAX_IDENTICAL_SUBSCRIPTIONS = 5


class KeyUnavailable(ProblemError):
    """A stored signing key that the configured encryption keys do not decrypt."""

    def __init__(self) -> None:
        super().__init__(
            503, "this subscription's signing key cannot be decrypted (encryption key missing?)"
        )


def to_out(subscription: Subscription, *, revealed_key: str | None = None) -> SubscriptionOut:
    """The response shape; the key is masked (from its stored hint) unless `revealed_key`."""
    return SubscriptionOut(
        id=subscription.id,
        organization_id=subscription.organization_id,
        workspace_id=subscription.workspace_id,
        service=subscription.service,
        event=subscription.event,
        event_filters=[EventFilter.model_validate(item) for item in subscription.event_filters],
        template=subscription.template,
        url=subscription.url,
        signing_key=revealed_key or mask_signing_key(subscription.signing_key_hint),
        status=subscription.status,  # type: ignore[arg-type]
        status_reason=subscription.status_reason,
        created_at=subscription.created_at,
        updated_at=subscription.updated_at,
    )


def _filter_set(event: str, filters: list[EventFilter]) -> FilterSet:
    parsed, errors = parse_filters(event, [(item.key, item.value) for item in filters])
    if parsed is None:
        raise InvalidInput(errors)
    return parsed


async def _target_host(url: str, settings: Settings) -> str:
    try:
        return await check_target_url(
            url,
            allow_http=settings.allow_http_targets,
            allowed_networks=settings.allowed_target_networks,
        )
    except TargetRefused as refused:
        raise invalid_field("url", str(refused)) from None


async def _check_identical_limit(
    repository: SubscriptionRepository,
    workspace_id: uuid.UUID,
    event: str,
    filters: FilterSet,
    excluding: uuid.UUID | None = None,
) -> None:
    await repository.lock_filter_group(workspace_id, event)
    count = await repository.count_identical(
        workspace_id, event, filters.channel_id, filters.statuses, excluding=excluding
    )
    if count >= MAX_IDENTICAL_SUBSCRIPTIONS:
        raise Conflict(
            f"this workspace already has {MAX_IDENTICAL_SUBSCRIPTIONS} subscriptions "
            "with the same event and filters"
        )


def _filters_json(filters: list[EventFilter]) -> list[dict[str, Any]]:
    return [item.model_dump() for item in filters]


async def create_subscription(
    session: AsyncSession,
    scope: WorkspaceScope,
    body: SubscriptionCreate,
    settings: Settings,
    key_ring: KeyRing,
) -> SubscriptionOut:
    event_filters = body.event_filters or []
    filters = _filter_set(body.event, event_filters)
    host = await _target_host(body.url, settings)
    repository = SubscriptionRepository(session)
    await _check_identical_limit(repository, scope.workspace_id, body.event, filters)
    key = body.signing_key or secrets.token_urlsafe(32)
    subscription_id = uuid.uuid4()
    now = datetime.now(UTC)
    subscription = Subscription(
        id=subscription_id,
        organization_id=scope.organization_id,
        workspace_id=scope.workspace_id,
        service=body.service,
        event=body.event,
        url=body.url,
        target_host=host,
        signing_key=key_ring.encrypt(key, bound_to=subscription_id),
        signing_key_hint=signing_key_hint(key),
        previous_signing_keys=[],
        event_filters=_filters_json(event_filters),
        channel_id=filters.channel_id,
        statuses=list(filters.statuses),
        template=body.template,
        status="active",
        created_at=now,
        updated_at=now,
    )
    await repository.add(subscription)
    # Only a generated key is shown, once: the customer has no other way to learn it.
    return to_out(subscription, revealed_key=key if body.signing_key is None else None)


async def _existing(
    repository: SubscriptionRepository, scope: WorkspaceScope, subscription_id: uuid.UUID
) -> Subscription:
    subscription = await repository.get(scope.workspace_id, subscription_id)
    if subscription is None:
        raise NotFound("no such subscription")
    return subscription


async def get_subscription(
    session: AsyncSession, scope: WorkspaceScope, subscription_id: uuid.UUID
) -> Subscription:
    return await _existing(SubscriptionRepository(session), scope, subscription_id)


async def list_subscriptions(
    session: AsyncSession,
    scope: WorkspaceScope,
    *,
    event: str | None,
    status: str | None,
    page_token: str | None,
    limit: int,
) -> SubscriptionPage:
    rows = await SubscriptionRepository(session).page(
        scope.workspace_id,
        event=event,
        status=status,
        after=decode_page_token(page_token),
        limit=limit + 1,
    )
    more = len(rows) > limit
    rows = rows[:limit]
    next_token = encode_page_token(rows[-1].created_at, rows[-1].id) if more else None
    return SubscriptionPage(results=[to_out(row) for row in rows], next_page_token=next_token)


def _decrypt(key_ring: KeyRing, token: str, subscription: Subscription) -> str:
    try:
        return key_ring.decrypt(token, bound_to=subscription.id)
    except UndecryptableError:
        raise KeyUnavailable() from None


def _rotated_keys(
    subscription: Subscription, new_key: str, settings: Settings, key_ring: KeyRing
) -> list[Any]:
    """The replaced key keeps signing until its own overlap ends; expired ones are dropped.

    A key that becomes current again leaves the list: it signs once, as the current key.
    Entries stay encrypted as they are; the replaced key moves over still encrypted.
    """
    now = datetime.now(UTC)
    still_valid = [
        entry
        for entry in subscription.previous_signing_keys
        if datetime.fromisoformat(entry["expiresAt"]) > now
        and _decrypt(key_ring, entry["key"], subscription) != new_key
    ]
    expires_at = now + timedelta(seconds=settings.key_rotation_overlap)
    if expires_at > now:
        still_valid.append({"key": subscription.signing_key, "expiresAt": expires_at.isoformat()})
    return still_valid


# eventFilters may be null: no filters, as with Bird; template may be null: none.
_NOT_NULLABLE = ("url", "signing_key", "status")


async def update_subscription(
    session: AsyncSession,
    scope: WorkspaceScope,
    subscription_id: uuid.UUID,
    body: SubscriptionUpdate,
    settings: Settings,
    key_ring: KeyRing,
) -> SubscriptionOut:
    changed = body.model_fields_set
    if not changed:
        raise InvalidInput(
            [],
            detail="give at least one of url, signingKey, status, eventFilters, template",
        )
    for name in _NOT_NULLABLE:
        if name in changed and getattr(body, name) is None:
            raise invalid_field(
                SubscriptionUpdate.model_fields[name].alias or name, "must not be null"
            )
    # Resolve a new URL before taking the row lock: DNS may take seconds.
    new_host = await _target_host(body.url, settings) if body.url is not None else None
    repository = SubscriptionRepository(session)
    subscription = await repository.get_for_update(scope.workspace_id, subscription_id)
    if subscription is None:
        raise NotFound("no such subscription")
    # Before any change: a key that cannot be decrypted refuses the whole PATCH.
    new_key = body.signing_key
    current_key = (
        _decrypt(key_ring, subscription.signing_key, subscription) if new_key is not None else None
    )

    if "event_filters" in changed:
        event_filters = body.event_filters or []
        filters = _filter_set(subscription.event, event_filters)
        if (filters.channel_id, list(filters.statuses)) != (
            subscription.channel_id,
            subscription.statuses,
        ):
            await _check_identical_limit(
                repository, scope.workspace_id, subscription.event, filters, subscription.id
            )
        subscription.event_filters = _filters_json(event_filters)
        subscription.channel_id = filters.channel_id
        subscription.statuses = list(filters.statuses)
    if new_host is not None:
        subscription.target_host = new_host
        subscription.url = str(body.url)
    if new_key is not None and new_key != current_key:
        subscription.previous_signing_keys = _rotated_keys(
            subscription, new_key, settings, key_ring
        )
        subscription.signing_key = key_ring.encrypt(new_key, bound_to=subscription.id)
        subscription.signing_key_hint = signing_key_hint(new_key)
    if "template" in changed:
        subscription.template = body.template
    if body.status is not None:
        if body.status == "inactive" and subscription.status == "active":
            await _stop_pending(session, subscription.id)
        if body.status == "active":
            subscription.failing_since = None
        subscription.status = body.status
        subscription.status_reason = None
    subscription.updated_at = datetime.now(UTC)
    await session.flush()
    return to_out(subscription)


async def delete_subscription(
    session: AsyncSession, scope: WorkspaceScope, subscription_id: uuid.UUID
) -> None:
    repository = SubscriptionRepository(session)
    # Locked first, as the dispatcher's recorder locks subscriptions before deliveries.
    subscription = await repository.get_for_update(scope.workspace_id, subscription_id)
    if subscription is None:
        raise NotFound("no such subscription")
    await _stop_pending(session, subscription.id)
    await repository.delete(subscription)


async def _stop_pending(session: AsyncSession, subscription_id: uuid.UUID) -> None:
    """Nothing more is sent for the subscription once the caller's transaction commits."""
    await requeue.stop(await session_driver_connection(session), [subscription_id], INACTIVE_ERROR)
