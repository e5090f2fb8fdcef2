"""The FastAPI application: routers, error shape, body limits, request logs, metrics."""

import asyncio
import contextlib
import functools
from collections.abc import AsyncIterator

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response
from fastapi_offline import FastAPIOffline
from prometheus_client import CONTENT_TYPE_LATEST

import voicehooks
from voicehooks.api import health
from voicehooks.api.openapi import install_openapi
from voicehooks.config import Settings
from voicehooks.db import partitions
from voicehooks.db.engine import create_engine, create_sessionmaker, fill_pool, raw_connection
from voicehooks.db.outage import DATABASE_ERRORS
from voicehooks.deliveries.endpoints import router as deliveries_router
from voicehooks.ingestion import repository as ingestion_repository
from voicehooks.ingestion.endpoints import router as ingestion_router
from voicehooks.ingestion.writer import IngestWriter
from voicehooks.observability.metrics import FLUSH_STATEMENT, counters, render_metrics
from voicehooks.portal.endpoints import router as portal_router
from voicehooks.subscriptions.endpoints import router as subscriptions_router
from voicehooks.web.body_limit import BodyLimitMiddleware
from voicehooks.web.problems import install_problem_handlers
from voicehooks.web.request_log import RequestLogMiddleware

log = structlog.get_logger("voicehooks.api")


def create_app(settings: Settings, database_url: str) -> FastAPI:
    # Parsed once: a missing or malformed key stops the app being built, not a request.
    key_ring = settings.key_ring()
    engine = create_engine(
        database_url,
        hot_statements=(*ingestion_repository.HOT_STATEMENTS, FLUSH_STATEMENT),
    )
    ingest_writer = IngestWriter(engine)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        acquire = functools.partial(raw_connection, engine)
        try:
            await fill_pool(engine)
            async with acquire() as connection:
                await partitions.create_ahead(connection, settings.retention_days)
        except DATABASE_ERRORS as exc:
            # Unreachable (or not migrated) now: requests open connections as they can, and
            # /readyz says 503 meanwhile. The SQLSTATE names the cause without any secret.
            sqlstate = getattr(exc, "sqlstate", None) or getattr(
                getattr(exc, "orig", None), "sqlstate", None
            )
            log.warning("database_pool_not_filled", error=type(exc).__name__, sqlstate=sqlstate)
        flusher = asyncio.create_task(counters.flush_forever(acquire))
        partitioner = asyncio.create_task(
            partitions.create_ahead_forever(acquire, settings.retention_days)
        )
        try:
            yield
        finally:
            # Requests still waiting for their commit get it (or their error) first.
            await ingest_writer.drain()
            flusher.cancel()
            partitioner.cancel()
            with contextlib.suppress(Exception):
                async with raw_connection(engine) as connection:
                    await counters.flush(connection)
            await engine.dispose()

    # Swagger UI and ReDoc from assets in the fastapi-offline package: /docs works offline.
    app = FastAPIOffline(
        title="voicehooks",
        version=voicehooks.__version__,
        description="Webhook subscriptions for voice call life-cycle events "
        "(Bird Channels compatible).",
        lifespan=lifespan,
        # Swagger UI would ask validator.swagger.io about the document: not from here.
        swagger_ui_parameters={"validatorUrl": None},
    )
    app.state.settings = settings
    app.state.key_ring = key_ring
    app.state.engine = engine
    app.state.ingest_writer = ingest_writer
    app.state.sessionmaker = create_sessionmaker(engine)
    install_problem_handlers(app)
    app.add_middleware(BodyLimitMiddleware)
    app.add_middleware(RequestLogMiddleware)
    app.include_router(health.router)
    app.include_router(subscriptions_router)
    app.include_router(deliveries_router)
    # The ingestion API has a document of its own (voicehooks.api.openapi says why).
    app.include_router(ingestion_router, include_in_schema=False)
    app.include_router(portal_router)
    install_openapi(app, ingestion_router.routes)

    @app.get(
        "/metrics",
        tags=["operations"],
        summary="Prometheus metrics",
        operation_id="getMetrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
    )
    async def metrics(request: Request) -> Response:
        """Prometheus text: ingested events, attempts by outcome, attempt durations, the due
        backlog and its oldest entry's age; totals of every process on the database."""
        return Response(
            await render_metrics(request.app.state.engine), media_type=CONTENT_TYPE_LATEST
        )

    return app
