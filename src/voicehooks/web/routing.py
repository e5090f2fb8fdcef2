"""The route class of every authenticated operation: who is asking comes before what was sent.

FastAPI decodes a JSON body before it runs any dependency, so an unauthenticated request
with a body that is not JSON would learn "422, not JSON" instead of "401". Here a body that
does not decode stands in as `NOT_JSON` until the dependencies (authentication first) have
run; body validation then refuses it, and the problem handler reports it as not JSON.
"""

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute

# A body that did not decode as JSON. A bare object: models validate with from_attributes,
# and pydantic reads fields from any object that has a __dict__ or __slots__, but not this.
NOT_JSON = object()


class _DeferredJsonRequest(Request):
    async def json(self) -> Any:
        try:
            return await super().json()
        except ValueError:  # JSONDecodeError, and UnicodeDecodeError for bytes that are not text
            return NOT_JSON


class AuthenticateFirstRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def authenticate_first(request: Request) -> Response:
            return await handler(_DeferredJsonRequest(request.scope, request.receive))

        return authenticate_first
