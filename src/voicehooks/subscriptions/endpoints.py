"""HTTP surface of webhook subscriptions (SPEC §2), Bird's paths and field names."""

from typing import Annotated

from fastapi import APIRouter, Body, Query, Response, status
from fastapi.responses import JSONResponse

from voicehooks.subscriptions import service
from voicehooks.subscriptions.schemas import (
    SEED_EXAMPLE,
    SubscriptionCreate,
    SubscriptionOut,
    SubscriptionPage,
    SubscriptionStatus,
    SubscriptionUpdate,
)
from voicehooks.tenancy.authentication import ScopeDep
from voicehooks.voice import EventName
from voicehooks.web.dependencies import IdPath, KeyRingDep, SessionDep, SettingsDep, parse_id
from voicehooks.web.pagination import Limit, PageToken, page_response
from voicehooks.web.problems import BODY_RESPONSES, CONFLICT_RESPONSES, PROBLEM_RESPONSES
from voicehooks.web.routing import AuthenticateFirstRoute

SUBSCRIPTIONS_PATH = (
    "/organizations/{organizationId}/workspaces/{workspaceId}/webhook-subscriptions"
)

router = APIRouter(
    prefix=SUBSCRIPTIONS_PATH,
    tags=["webhook-subscriptions"],
    route_class=AuthenticateFirstRoute,
    responses=PROBLEM_RESPONSES,
)


CreateBody = Annotated[
    SubscriptionCreate,
    Body(
        openapi_examples={
            "seed": {
                "summary": "Completed and starting calls of one channel",
                "value": SEED_EXAMPLE,
            },
            "generated key": {
                "summary": "Every outbound call event; the service generates the signing key",
                "value": {
                    "service": "channels",
                    "event": "voice.outbound",
                    "url": "https://hooks.example.com:8443/voice",
                },
            },
        }
    ),
]
UpdateBody = Annotated[
    SubscriptionUpdate,
    Body(
        openapi_examples={
            "rotate key": {
                "summary": "Rotate the signing key",
                "value": {"signingKey": "a-brand-new-signing-key"},
            },
            "reactivate": {"summary": "Activate it again", "value": {"status": "active"}},
            "no filters": {
                "summary": "Move it and drop its filters",
                "value": {"url": "https://example.com/new-hook", "eventFilters": None},
            },
        }
    ),
]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SubscriptionOut,
    responses={**CONFLICT_RESPONSES, **BODY_RESPONSES},
    summary="Create a webhook subscription",
    operation_id="createSubscription",
)
async def create_subscription(
    body: CreateBody,
    scope: ScopeDep,
    session: SessionDep,
    settings: SettingsDep,
    key_ring: KeyRingDep,
) -> SubscriptionOut:
    """Subscribe a URL to `voice.inbound` or `voice.outbound` events of the workspace,
    optionally filtered by channel and call status. The signing key is masked in the answer,
    except a generated one, shown in full here only. 409 when the workspace already has 5
    subscriptions with the same event and filters."""
    return await service.create_subscription(session, scope, body, settings, key_ring)


@router.get(
    "",
    response_model=SubscriptionPage,
    summary="List webhook subscriptions",
    operation_id="listSubscriptions",
)
async def list_subscriptions(
    scope: ScopeDep,
    session: SessionDep,
    limit: Limit = 10,
    page_token: PageToken = None,
    event: Annotated[EventName | None, Query()] = None,
    status: Annotated[SubscriptionStatus | None, Query()] = None,
) -> JSONResponse:
    """The workspace's subscriptions, newest first, `limit` per page; `nextPageToken` is
    there only when more follow. Optionally only those of one event or status."""
    page = await service.list_subscriptions(
        session, scope, event=event, status=status, page_token=page_token, limit=limit
    )
    return page_response(page)


@router.get(
    "/{subscriptionId}",
    response_model=SubscriptionOut,
    summary="Get a webhook subscription",
    operation_id="getSubscription",
)
async def get_subscription(
    subscriptionId: IdPath,
    scope: ScopeDep,
    session: SessionDep,
) -> SubscriptionOut:
    """One subscription, its signing key masked."""
    return service.to_out(await service.get_subscription(session, scope, parse_id(subscriptionId)))


@router.patch(
    "/{subscriptionId}",
    response_model=SubscriptionOut,
    responses={**CONFLICT_RESPONSES, **BODY_RESPONSES},
    summary="Update a webhook subscription",
    operation_id="updateSubscription",
)
async def update_subscription(
    subscriptionId: IdPath,
    body: UpdateBody,
    scope: ScopeDep,
    session: SessionDep,
    settings: SettingsDep,
    key_ring: KeyRingDep,
) -> SubscriptionOut:
    """Change any of `url`, `signingKey`, `status`, `eventFilters`, `template`. A new
    signing key rotates it (the old one signs beside it for 24 hours); setting it inactive
    fails its pending deliveries."""
    return await service.update_subscription(
        session, scope, parse_id(subscriptionId), body, settings, key_ring
    )


@router.delete(
    "/{subscriptionId}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a webhook subscription",
    operation_id="deleteSubscription",
)
async def delete_subscription(
    subscriptionId: IdPath,
    scope: ScopeDep,
    session: SessionDep,
) -> Response:
    """Delete it, with its pending deliveries and their logs."""
    await service.delete_subscription(session, scope, parse_id(subscriptionId))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
