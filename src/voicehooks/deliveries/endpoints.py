"""HTTP surface of a subscription's deliveries: logs, states, retry, recover, test."""

from typing import Annotated

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse

from voicehooks.api.dependencies import ScopeDep, SessionDep, parse_id
from voicehooks.api.pagination import Limit, PageToken, page_response
from voicehooks.api.problems import CONFLICT_RESPONSES, PROBLEM_RESPONSES
from voicehooks.api.routing import AuthenticateFirstRoute
from voicehooks.deliveries import service
from voicehooks.deliveries.schemas import (
    AttemptDetails,
    AttemptPage,
    DeliveryOut,
    DeliveryPage,
    DeliveryState,
    ExecutionStatus,
    RecoverIn,
    RecoverOut,
    TestOut,
)
from voicehooks.subscriptions.endpoints import SUBSCRIPTIONS_PATH

router = APIRouter(
    prefix=SUBSCRIPTIONS_PATH + "/{subscriptionId}",
    tags=["deliveries"],
    route_class=AuthenticateFirstRoute,
    responses=PROBLEM_RESPONSES,
)


@router.get("/logs", response_model=AttemptPage, summary="Delivery attempts, newest first")
async def attempt_logs(
    subscriptionId: str,
    scope: ScopeDep,
    session: SessionDep,
    limit: Limit = 10,
    page_token: PageToken = None,
    execution_status: Annotated[ExecutionStatus | None, Query(alias="executionStatus")] = None,
) -> JSONResponse:
    return page_response(
        await service.attempt_logs(
            session,
            scope,
            parse_id(subscriptionId),
            execution_status=execution_status,
            page_token=page_token,
            limit=limit,
        )
    )


@router.get(
    "/logs/details",
    response_model=AttemptDetails,
    summary="Every attempt of one delivery (Bird's log details)",
)
async def attempt_details(
    subscriptionId: str,
    scope: ScopeDep,
    session: SessionDep,
    request_id: Annotated[str, Query(alias="requestId", max_length=64)],
) -> AttemptDetails:
    return await service.attempt_details(
        session, scope, parse_id(subscriptionId), parse_id(request_id)
    )


@router.get("/deliveries", response_model=DeliveryPage, summary="Deliveries, newest first")
async def list_deliveries(
    subscriptionId: str,
    scope: ScopeDep,
    session: SessionDep,
    limit: Limit = 10,
    page_token: PageToken = None,
    state: Annotated[DeliveryState | None, Query()] = None,
) -> JSONResponse:
    return page_response(
        await service.deliveries(
            session,
            scope,
            parse_id(subscriptionId),
            state=state,
            page_token=page_token,
            limit=limit,
        )
    )


@router.post(
    "/deliveries/{deliveryId}/retry",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=DeliveryOut,
    responses=CONFLICT_RESPONSES,
    summary="One more attempt of a finished delivery, outside the schedule",
)
async def retry_delivery(
    subscriptionId: str,
    deliveryId: str,
    scope: ScopeDep,
    session: SessionDep,
) -> DeliveryOut:
    return await service.retry_delivery(
        session, scope, parse_id(subscriptionId), parse_id(deliveryId)
    )


@router.post(
    "/recover",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RecoverOut,
    responses=CONFLICT_RESPONSES,
    summary="Re-queue every failed delivery created since a time",
)
async def recover(
    subscriptionId: str,
    body: RecoverIn,
    scope: ScopeDep,
    session: SessionDep,
) -> RecoverOut:
    return await service.recover_failed(session, scope, parse_id(subscriptionId), body.since)


@router.post(
    "/test",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TestOut,
    responses=CONFLICT_RESPONSES,
    summary="Send a synthetic event of the subscription's type",
)
async def send_test(
    subscriptionId: str,
    scope: ScopeDep,
    session: SessionDep,
) -> TestOut:
    return await service.send_test_event(session, scope, parse_id(subscriptionId))
