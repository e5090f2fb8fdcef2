"""HTTP surface of webhook subscriptions (SPEC §2), Bird's paths and field names."""

from typing import Annotated

from fastapi import APIRouter, Query, Response, status
from fastapi.responses import JSONResponse

from voicehooks.api.dependencies import ScopeDep, SessionDep, SettingsDep, parse_id
from voicehooks.api.pagination import Limit, PageToken, page_response
from voicehooks.api.problems import CONFLICT_RESPONSES, PROBLEM_RESPONSES
from voicehooks.api.routing import AuthenticateFirstRoute
from voicehooks.subscriptions import service
from voicehooks.subscriptions.schemas import (
    SubscriptionCreate,
    SubscriptionOut,
    SubscriptionPage,
    SubscriptionStatus,
    SubscriptionUpdate,
)
from voicehooks.voice import EventName

SUBSCRIPTIONS_PATH = (
    "/organizations/{organizationId}/workspaces/{workspaceId}/webhook-subscriptions"
)

router = APIRouter(
    prefix=SUBSCRIPTIONS_PATH,
    tags=["webhook-subscriptions"],
    route_class=AuthenticateFirstRoute,
    responses=PROBLEM_RESPONSES,
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=SubscriptionOut,
    responses=CONFLICT_RESPONSES,
    summary="Create a webhook subscription",
)
async def create_subscription(
    body: SubscriptionCreate, scope: ScopeDep, session: SessionDep, settings: SettingsDep
) -> SubscriptionOut:
    return await service.create_subscription(session, scope, body, settings)


@router.get("", response_model=SubscriptionPage, summary="List webhook subscriptions")
async def list_subscriptions(
    scope: ScopeDep,
    session: SessionDep,
    limit: Limit = 10,
    page_token: PageToken = None,
    event: Annotated[EventName | None, Query()] = None,
    status: Annotated[SubscriptionStatus | None, Query()] = None,
) -> JSONResponse:
    page = await service.list_subscriptions(
        session, scope, event=event, status=status, page_token=page_token, limit=limit
    )
    return page_response(page)


@router.get(
    "/{subscriptionId}", response_model=SubscriptionOut, summary="Get a webhook subscription"
)
async def get_subscription(
    subscriptionId: str,
    scope: ScopeDep,
    session: SessionDep,
) -> SubscriptionOut:
    return service.to_out(await service.get_subscription(session, scope, parse_id(subscriptionId)))


@router.patch(
    "/{subscriptionId}",
    response_model=SubscriptionOut,
    responses=CONFLICT_RESPONSES,
    summary="Update a webhook subscription",
)
async def update_subscription(
    subscriptionId: str,
    body: SubscriptionUpdate,
    scope: ScopeDep,
    session: SessionDep,
    settings: SettingsDep,
) -> SubscriptionOut:
    return await service.update_subscription(
        session, scope, parse_id(subscriptionId), body, settings
    )


@router.delete(
    "/{subscriptionId}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete a webhook subscription",
)
async def delete_subscription(
    subscriptionId: str,
    scope: ScopeDep,
    session: SessionDep,
) -> Response:
    await service.delete_subscription(session, scope, parse_id(subscriptionId))
    return Response(status_code=status.HTTP_204_NO_CONTENT)
