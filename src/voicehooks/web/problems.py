"""RFC 9457 problem details: the one shape of every error the API answers, including the
errors services raise (voicehooks.errors)."""

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from voicehooks.db.outage import DATABASE_ERRORS, RETRY_AFTER_SECONDS, is_outage, outages
from voicehooks.errors import FieldError, ProblemError, field_path
from voicehooks.web.routing import NOT_JSON

PROBLEM_JSON = "application/problem+json"

_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


class Problem(BaseModel):
    type: str = "about:blank"
    title: str
    status: int
    detail: str | None = None
    errors: list[FieldError] | None = None


def problem_response(
    status: int,
    detail: str | None,
    *,
    errors: Sequence[FieldError] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    problem = Problem(
        title=_TITLES.get(status, "Error"),
        status=status,
        detail=detail,
        errors=list(errors) if errors is not None else None,
    )
    return JSONResponse(
        problem.model_dump(exclude_none=True),
        status_code=status,
        media_type=PROBLEM_JSON,
        headers=headers,
    )


def _validation_errors(exc: RequestValidationError) -> list[FieldError]:
    errors = []
    for error in exc.errors():
        location: list[Any] = [part for part in error.get("loc", ()) if not _is_union_tag(part)]
        errors.append(FieldError(field=field_path(location), message=str(error.get("msg"))))
    return errors


def _is_union_tag(part: object) -> bool:
    # pydantic adds the tried type's name ("function-after[...]", "str") inside unions.
    return isinstance(part, str) and ("[" in part or part in {"str", "int", "float", "bool"})


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(request: Request) -> list[str]:
    """Every method that some route of the app takes on this path.

    Starlette answers 405 from the first route whose path matches, so its `Allow` names
    only that route's methods, while each operation of a path is a route of its own. The
    router itself is asked, method by method, whether a route takes the request.
    """
    routes = request.app.router.routes
    return [
        method
        for method in _METHODS
        if any(
            route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes
        )
    ]


def install_problem_handlers(app: FastAPI) -> None:
    async def on_problem(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, ProblemError)
        return problem_response(exc.status, exc.detail, errors=exc.errors, headers=exc.headers)

    async def on_validation(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        if any(
            error.get("type") == "json_invalid" or error.get("input") is NOT_JSON
            for error in exc.errors()
        ):
            return problem_response(
                422,
                "the body is not valid JSON",
                errors=[FieldError(field="body", message="not valid JSON")],
            )
        return problem_response(422, "validation failed", errors=_validation_errors(exc))

    async def on_http(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        detail = exc.detail if isinstance(exc.detail, str) else None
        headers = dict(exc.headers) if exc.headers else {}
        if exc.status_code == 405:
            headers["Allow"] = ", ".join(allowed_methods(request))
        return problem_response(exc.status_code, detail, headers=headers or None)

    async def on_database_error(request: Request, exc: Exception) -> JSONResponse:
        # Answered here, not re-raised: the client gets a response it can act on and keeps
        # its keep-alive connection; the outage is one log line, not a traceback per request.
        if not is_outage(exc):
            raise exc  # a fault of ours: 500, with its traceback logged
        outages.failed(exc)
        return problem_response(
            503,
            "the database cannot be reached; try again shortly",
            headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
        )

    async def on_unexpected(_: Request, exc: Exception) -> JSONResponse:
        return problem_response(500, "internal error")

    app.add_exception_handler(ProblemError, on_problem)
    app.add_exception_handler(RequestValidationError, on_validation)
    app.add_exception_handler(StarletteHTTPException, on_http)
    for database_error in DATABASE_ERRORS:
        app.add_exception_handler(database_error, on_database_error)
    app.add_exception_handler(Exception, on_unexpected)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries for problem+json answers; voicehooks.api.openapi turns each into a
    reference to the one declaration of that error response."""
    return {
        status: {"description": _TITLES[status], "content": {PROBLEM_JSON: {}}}
        for status in statuses
    }


PROBLEM_RESPONSES = problem_responses(401, 404, 422, 503)
BODY_RESPONSES = problem_responses(413)
CONFLICT_RESPONSES = problem_responses(409)
