"""HTTP surface of a subscription's deliveries: logs, states, retry, recover, test."""

from typing import Annotated

from fastapi import APIRouter, Body, Query, status
from fastapi.responses import JSONResponse

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
from voicehooks.tenancy.authentication import ScopeDep
from voicehooks.web.dependencies import IdPath, SessionDep, parse_id
from voicehooks.web.pagination import Limit, PageToken, page_response
from voicehooks.web.problems import BODY_RESPONSES, CONFLICT_RESPONSES, PROBLEM_RESPONSES
from voicehooks.web.routing import AuthenticateFirstRoute

router = APIRouter(
    prefix=SUBSCRIPTIONS_PATH + "/{subscriptionId}",
    tags=["deliveries"],
    route_class=AuthenticateFirstRoute,
    responses=PROBLEM_RESPONSES,
)


@router.get(
    "/logs",
    response_model=AttemptPage,
    summary="Delivery attempts, newest first",
    operation_id="listAttempts",
)
async def attempt_logs(
    subscriptionId: IdPath,
    scope: ScopeDep,
    session: SessionDep,
    limit: Limit = 10,
    page_token: PageToken = None,
    execution_status: Annotated[ExecutionStatus | None, Query(alias="executionStatus")] = None,
) -> JSONResponse:
    """One entry per delivery attempt: when, how long, the answer's status code and first
    2 KiB, or the error; also under Bird's names (`requestId`, `attemptCount`,
    `httpStatusCode`)."""
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
    operation_id="getAttemptDetails",
)
async def attempt_details(
    subscriptionId: IdPath,
    scope: ScopeDep,
    session: SessionDep,
    request_id: Annotated[
        str,
        Query(
            alias="requestId",
            max_length=64,
            description="The delivery id (`requestId` of a log entry).",
            json_schema_extra={"format": "uuid"},
        ),
    ],
) -> AttemptDetails:
    """Every attempt of the delivery `requestId`, newest first, as in the logs."""
    return await service.attempt_details(
        session, scope, parse_id(subscriptionId), parse_id(request_id)
    )


@router.get(
    "/deliveries",
    response_model=DeliveryPage,
    summary="Deliveries, newest first",
    operation_id="listDeliveries",
)
async def list_deliveries(
    subscriptionId: IdPath,
    scope: ScopeDep,
    session: SessionDep,
    limit: Limit = 10,
    page_token: PageToken = None,
    state: Annotated[DeliveryState | None, Query()] = None,
) -> JSONResponse:
    """One delivery per event and subscription: its state, attempts so far, and when the
    next one is due (null once final)."""
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
    operation_id="retryDelivery",
)
async def retry_delivery(
    subscriptionId: IdPath,
    deliveryId: IdPath,
    scope: ScopeDep,
    session: SessionDep,
) -> DeliveryOut:
    """Exactly one more attempt of a `failed` or `succeeded` delivery, numbered after the
    last. 409 for a pending delivery or an inactive subscription."""
    return await service.retry_delivery(
        session, scope, parse_id(subscriptionId), parse_id(deliveryId)
    )


@router.post(
    "/recover",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=RecoverOut,
    responses={**CONFLICT_RESPONSES, **BODY_RESPONSES},
    summary="Re-queue every failed delivery created since a time",
    operation_id="recoverDeliveries",
)
async def recover(
    subscriptionId: IdPath,
    body: Annotated[
        RecoverIn,
        Body(
            openapi_examples={
                "since a day": {
                    "summary": "Everything that failed since a time",
                    "value": {"since": "2026-11-24T00:00:00Z"},
                }
            }
        ),
    ],
    scope: ScopeDep,
    session: SessionDep,
) -> RecoverOut:
    """Each `failed` delivery created at or after `since` gets one more attempt. 422 when
    `since` is in the future; 409 on an inactive subscription."""
    return await service.recover_failed(session, scope, parse_id(subscriptionId), body.since)


@router.post(
    "/test",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=TestOut,
    responses=CONFLICT_RESPONSES,
    summary="Send a synthetic event of the subscription's type",
    operation_id="sendTestEvent",
)
async def send_test(
    subscriptionId: IdPath,
    scope: ScopeDep,
    session: SessionDep,
) -> TestOut:
    """A valid call event of the subscription's event type (its channel and first status
    filter, when it has them), through the normal pipeline, to this subscription only.
    409 on an inactive subscription."""
    return await service.send_test_event(session, scope, parse_id(subscriptionId))
