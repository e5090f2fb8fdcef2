"""The OpenAPI documents: the public API at /openapi.json, ingestion at /internal/openapi.json.

The ingestion API is service-to-service (the voice platform), with its own credential, so it
has a document of its own: a client generated from the public document for customers (the
one a Bird client is swapped against) has no operation it could not call, and the public
document names one security scheme only.

FastAPI builds each document; this module then declares what FastAPI cannot say: the error
answers once, as `application/problem+json` responses referenced by every operation, the
security schemes as Bird names them, and links between operations.
"""

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse
from starlette.routing import BaseRoute

from voicehooks.web.problems import PROBLEM_JSON, Problem

# status: (component name, description)
ERROR_RESPONSES = {
    "400": ("BadRequest", "The request could not be read."),
    "401": (
        "Unauthorized",
        "Missing or wrong credentials; `WWW-Authenticate` names the scheme the operation wants.",
    ),
    "404": (
        "NotFound",
        "No such resource here: unknown, not a UUID, or another organization's (never told).",
    ),
    "409": ("Conflict", "The resource is not in a state that allows this."),
    "413": ("ContentTooLarge", "The body exceeds the limit (1 MiB; ingestion: 10 MiB)."),
    "422": (
        "UnprocessableContent",
        "Validation failed; `errors` names each field (e.g. `eventFilters[1].value`).",
    ),
    "503": ("ServiceUnavailable", "The database cannot be reached now; retry after a while."),
}
_HEADERS = {
    "401": {
        "WWW-Authenticate": {
            "description": "The authentication scheme: `AccessKey` or `Bearer`.",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    "503": {
        "Retry-After": {
            "description": "Seconds to wait before retrying.",
            "required": True,
            "schema": {"type": "string"},
        }
    },
}
_PROBLEM_EXAMPLE = {
    "type": "about:blank",
    "title": "Unprocessable Content",
    "status": 422,
    "detail": "validation failed",
    "errors": [{"field": "eventFilters[1].value", "message": "not a call status of voice.inbound"}],
}

ACCESS_KEY_SCHEME = {
    "type": "http",
    "scheme": "AccessKey",
    "description": "`Authorization: AccessKey <key>`, as Bird's API takes it; "
    "`voicehooks bootstrap` prints a key.",
}
INGEST_TOKEN_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "`Authorization: Bearer <VOICEHOOKS_INGEST_TOKEN>`.",
}

_ONE = "/organizations/{organizationId}/workspaces/{workspaceId}/webhook-subscriptions"
_SUBSCRIPTION_PARAMETERS = {
    "organizationId": "$request.path.organizationId",
    "workspaceId": "$request.path.workspaceId",
    "subscriptionId": "$response.body#/id",
}
# What a created subscription leads to (for readers, generators and stateful testing).
_LINKS_FROM_CREATE = {
    "GetSubscription": "getSubscription",
    "UpdateSubscription": "updateSubscription",
    "DeleteSubscription": "deleteSubscription",
    "ListAttempts": "listAttempts",
    "ListDeliveries": "listDeliveries",
    "RecoverDeliveries": "recoverDeliveries",
    "SendTestEvent": "sendTestEvent",
}
_LINKS_FROM_TEST = {
    "RetryDelivery": ("retryDelivery", "deliveryId"),
    "GetAttemptDetails": ("getAttemptDetails", "requestId"),
}


def _problem_components() -> dict[str, Any]:
    """Problem and FieldError as component schemas, and one response per error status."""
    schema = Problem.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = schema.pop("$defs", {})
    schemas["Problem"] = schema
    responses = {
        name: {
            "description": description,
            "content": {
                PROBLEM_JSON: {
                    "schema": {"$ref": "#/components/schemas/Problem"},
                    "example": {**_PROBLEM_EXAMPLE, "status": int(status)}
                    if status == "422"
                    else {"type": "about:blank", "title": name, "status": int(status)},
                }
            },
            **({"headers": _HEADERS[status]} if status in _HEADERS else {}),
        }
        for status, (name, description) in ERROR_RESPONSES.items()
    }
    return {"schemas": schemas, "responses": responses}


def _finish(document: dict[str, Any], schemes: dict[str, Any]) -> dict[str, Any]:
    components = document.setdefault("components", {})
    problems = _problem_components()
    components.setdefault("schemas", {}).update(problems["schemas"])
    # FastAPI's own validation error shape is never answered: errors are problems.
    for unused in ("HTTPValidationError", "ValidationError"):
        components["schemas"].pop(unused, None)
    components["securitySchemes"] = schemes
    used: set[str] = set()
    for item in document.get("paths", {}).values():
        for operation in item.values():
            for status, answer in list(operation.get("responses", {}).items()):
                if status in ERROR_RESPONSES and PROBLEM_JSON in answer.get("content", {}):
                    name = ERROR_RESPONSES[status][0]
                    operation["responses"][status] = {"$ref": f"#/components/responses/{name}"}
                    used.add(name)
    components["responses"] = {
        name: answer for name, answer in problems["responses"].items() if name in used
    }
    return document


def _add_links(document: dict[str, Any]) -> None:
    paths = document["paths"]
    create = paths[_ONE]["post"]["responses"]["201"]
    create["links"] = {
        name: {"operationId": target, "parameters": dict(_SUBSCRIPTION_PARAMETERS)}
        for name, target in _LINKS_FROM_CREATE.items()
    }
    test = paths[_ONE + "/{subscriptionId}/test"]["post"]["responses"]["202"]
    test["links"] = {
        name: {
            "operationId": target,
            "parameters": {
                "organizationId": "$request.path.organizationId",
                "workspaceId": "$request.path.workspaceId",
                "subscriptionId": "$request.path.subscriptionId",
                parameter: "$response.body#/deliveryId",
            },
        }
        for name, (target, parameter) in _LINKS_FROM_TEST.items()
    }


def public_document(app: FastAPI) -> dict[str, Any]:
    document = get_openapi(
        title=app.title,
        version=app.version,
        description=app.description,
        routes=app.routes,
        tags=PUBLIC_TAGS,
    )
    _finish(document, {"AccessKey": ACCESS_KEY_SCHEME})
    _add_links(document)
    return document


def internal_document(app: FastAPI, routes: Sequence[BaseRoute]) -> dict[str, Any]:
    document = get_openapi(
        title=f"{app.title} ingestion (internal)",
        version=app.version,
        description="The internal ingestion API: the voice platform reports every call-status "
        "change here (service to service, not for customers).",
        routes=routes,
        tags=INTERNAL_TAGS,
    )
    return _finish(document, {"IngestToken": INGEST_TOKEN_SCHEME})


PUBLIC_TAGS = [
    {
        "name": "webhook-subscriptions",
        "description": "Subscriptions of a workspace's URLs to voice call events (Bird's API).",
    },
    {
        "name": "deliveries",
        "description": "What was sent to a subscription, and sending it again.",
    },
    {"name": "portal", "description": "One-time links into the customer portal (SPEC §6)."},
    {"name": "operations", "description": "Health, readiness and metrics."},
]
INTERNAL_TAGS = [
    {"name": "ingestion", "description": "Call-status changes reported by the voice platform."}
]
INTERNAL_OPENAPI_URL = "/internal/openapi.json"


def install_openapi(app: FastAPI, internal_routes: Sequence[BaseRoute]) -> None:
    """Serve both documents; the routes of `internal_routes` are left out of the public one."""
    cache: dict[str, dict[str, Any]] = {}

    def public() -> dict[str, Any]:
        if "public" not in cache:
            cache["public"] = public_document(app)
        return cache["public"]

    app.openapi = public  # type: ignore[method-assign]

    @app.get(INTERNAL_OPENAPI_URL, include_in_schema=False)
    async def internal_openapi() -> JSONResponse:
        if "internal" not in cache:
            cache["internal"] = internal_document(app, internal_routes)
        return JSONResponse(cache["internal"])
