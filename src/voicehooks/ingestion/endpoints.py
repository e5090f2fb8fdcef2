"""The internal ingestion API (SPEC §3): the voice platform reports call-status changes here."""

import hmac
from typing import Annotated

import orjson
import structlog
from fastapi import APIRouter, Body, Depends, Request, Response, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from voicehooks.ingestion import service
from voicehooks.ingestion.schemas import (
    EVENT_EXAMPLE,
    BatchResult,
    EventBatchIn,
    EventIn,
    IngestResult,
)
from voicehooks.ingestion.writer import IngestWriter
from voicehooks.web.dependencies import SettingsDep, Unauthorized
from voicehooks.web.problems import BODY_RESPONSES, PROBLEM_RESPONSES
from voicehooks.web.routing import AuthenticateFirstRoute

_bearer = HTTPBearer(scheme_name="IngestToken", auto_error=False)
BEARER_CHALLENGE = 'Bearer realm="voicehooks-ingestion"'


async def require_ingest_token(
    settings: SettingsDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
) -> None:
    expected = settings.ingest_token
    if expected is None:
        raise Unauthorized(
            "ingestion is disabled: the server has no VOICEHOOKS_INGEST_TOKEN", BEARER_CHALLENGE
        )
    if credentials is None:
        raise Unauthorized(
            "send the header `Authorization: Bearer <ingest token>`", BEARER_CHALLENGE
        )
    if not hmac.compare_digest(
        credentials.credentials.encode("utf-8", "surrogatepass"),
        expected.get_secret_value().encode(),
    ):
        raise Unauthorized(
            "this bearer token is not the ingest token (VOICEHOOKS_INGEST_TOKEN)",
            BEARER_CHALLENGE + ', error="invalid_token"',
        )


def _writer(request: Request) -> IngestWriter:
    writer: IngestWriter = request.app.state.ingest_writer
    return writer


def _accepted(results: dict[str, object]) -> Response:
    """The 202, rendered by orjson from the service's results. Returned as a model, FastAPI
    would validate it again, turn it into plain data and json.dumps that: per event, three
    times the work of building and rendering it here (`response_model` still documents it).
    Ids come from asyncpg as its own UUID type, which orjson hands to `str`."""
    return Response(
        orjson.dumps(results, default=str),
        status.HTTP_202_ACCEPTED,
        media_type="application/json",
    )


router = APIRouter(
    prefix="/internal/v1",
    tags=["ingestion"],
    route_class=AuthenticateFirstRoute,
    dependencies=[Depends(require_ingest_token)],
    responses={**PROBLEM_RESPONSES, **BODY_RESPONSES},
)


@router.post(
    "/events",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=IngestResult,
    summary="Report one call-status change",
    operation_id="ingestEvent",
)
async def ingest_event(
    body: Annotated[
        EventIn,
        Body(openapi_examples={"ringing": {"summary": "A call rings", "value": EVENT_EXAMPLE}}),
    ],
    request: Request,
) -> Response:
    """Store the event and one delivery per matching subscription, in one commit, before
    answering 202. A repeated `id` in the workspace answers the original result with
    `duplicate: true`."""
    events = [body]
    (result,) = await _writer(request).write(events, service.validate_events(events, batch=False))
    structlog.contextvars.bind_contextvars(
        workspace_id=str(body.workspace_id), event_id=str(result.id)
    )
    return _accepted(result._asdict())


@router.post(
    "/events/batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=BatchResult,
    summary="Report up to 1000 call-status changes at once",
    operation_id="ingestEvents",
)
async def ingest_batch(
    body: Annotated[
        EventBatchIn,
        Body(
            openapi_examples={
                "two": {
                    "summary": "A call rings, then is answered",
                    "value": {
                        "events": [
                            EVENT_EXAMPLE,
                            {
                                **EVENT_EXAMPLE,
                                "id": "platform-event-0002",
                                "payload": {**EVENT_EXAMPLE["payload"], "status": "ongoing"},
                            },
                        ]
                    },
                }
            }
        ),
    ],
    request: Request,
) -> Response:
    """As one event each, in one commit: one result per item, in order; an invalid item
    fails the whole batch (422, `errors[].field` names its index)."""
    facts = service.validate_events(body.events, batch=True)
    results = await _writer(request).write(body.events, facts)
    structlog.contextvars.bind_contextvars(
        workspace_ids=sorted({str(item.workspace_id) for item in body.events}),
        event_ids=[str(result.id) for result in results],
    )
    return _accepted({"results": [result._asdict() for result in results]})
