"""The request log: one line per HTTP request, with the ids its path names."""

import time

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_PATH_IDS = {
    "workspaceId": "workspace_id",
    "subscriptionId": "subscription_id",
    "deliveryId": "delivery_id",
}


class RequestLogMiddleware:
    """One log line per request: method, path, status, duration (never headers or bodies)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.log = structlog.get_logger("voicehooks.http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        structlog.contextvars.clear_contextvars()
        try:
            await self.app(scope, receive, capture)
        finally:
            path_params = scope.get("path_params") or {}
            ids = {
                field: path_params[param]
                for param, field in _PATH_IDS.items()
                if param in path_params
            }
            # Handlers bind what the path does not show (e.g. ingested event ids).
            self.log.info(
                "request",
                method=scope["method"],
                path=scope["path"],
                status=status,
                duration_ms=round((time.perf_counter() - started) * 1000, 1),
                **ids,
            )
