"""The OpenAPI document, and a schema-driven fuzz of the subscriptions API against it."""

import re
import uuid

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core import NOT_SET
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.subscriptions_helpers import PROBLEM_JSON, SUBSCRIPTION_FIELDS
from tests.support import SEED_BODY, create_subscription
from voicehooks.api.app import create_app

BASE = "/organizations/{organizationId}/workspaces/{workspaceId}/webhook-subscriptions"
ONE = BASE + "/{subscriptionId}"
EXPECTED_OPERATIONS = {
    (BASE, "post"): ("SubscriptionCreate", "201", "SubscriptionOut"),
    (BASE, "get"): (None, "200", "SubscriptionPage"),
    (ONE, "get"): (None, "200", "SubscriptionOut"),
    (ONE, "patch"): ("SubscriptionUpdate", "200", "SubscriptionOut"),
    (ONE, "delete"): (None, "204", None),
    (ONE + "/logs", "get"): (None, "200", "AttemptPage"),
    (ONE + "/deliveries", "get"): (None, "200", "DeliveryPage"),
    (ONE + "/deliveries/{deliveryId}/retry", "post"): (None, "202", None),
    (ONE + "/recover", "post"): ("RecoverIn", "202", "RecoverOut"),
    (ONE + "/test", "post"): (None, "202", "TestOut"),
    ("/internal/v1/events", "post"): ("EventIn", "202", "IngestResult"),
    ("/internal/v1/events/batch", "post"): ("EventBatchIn", "202", "BatchResult"),
}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture
async def document(client):
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    return response.json()


def _ref(schema: dict) -> str:
    return schema["$ref"].rsplit("/", 1)[-1]


async def test_every_operation_of_the_spec_is_documented(document):
    assert document["openapi"].startswith("3.")
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    assert set(EXPECTED_OPERATIONS) <= documented
    for path in ("/healthz", "/readyz", "/metrics"):
        assert "get" in document["paths"][path]


@pytest.mark.parametrize(("path", "method"), sorted(EXPECTED_OPERATIONS))
async def test_operations_have_request_and_response_schemas(document, path, method):
    request_model, success, response_model = EXPECTED_OPERATIONS[path, method]
    operation = document["paths"][path][method]
    schemas = document["components"]["schemas"]
    if request_model is not None:
        body = operation["requestBody"]["content"]["application/json"]["schema"]
        assert _ref(body) == request_model
        assert schemas[request_model]["properties"]
    assert success in operation["responses"]
    if response_model is not None:
        answer = operation["responses"][success]["content"]["application/json"]["schema"]
        assert _ref(answer) == response_model
        assert schemas[response_model]["properties"]
    for status in ("401", "404", "422"):
        problem = operation["responses"][status]["content"][PROBLEM_JSON]["schema"]
        assert _ref(problem) == "Problem"
    scheme = "IngestToken" if path.startswith("/internal/") else "AccessKey"
    assert operation["security"] == [{scheme: []}]


async def test_subscription_schemas_use_birds_field_names(document):
    schemas = document["components"]["schemas"]
    assert set(schemas["SubscriptionOut"]["properties"]) == SUBSCRIPTION_FIELDS
    assert set(schemas["SubscriptionCreate"]["required"]) == {"service", "event", "url"}
    assert set(schemas["SubscriptionUpdate"]["properties"]) == {
        "url",
        "signingKey",
        "status",
        "eventFilters",
        "template",
    }
    assert set(schemas["SubscriptionPage"]["properties"]) == {"results", "nextPageToken"}
    assert set(schemas["Problem"]["properties"]) >= {"type", "title", "status", "detail", "errors"}
    security = document["components"]["securitySchemes"]["AccessKey"]
    assert (security["type"], security["in"], security["name"]) == (
        "apiKey",
        "header",
        "Authorization",
    )


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_interactive_docs_are_served_with_their_own_assets(client, page):
    """Offline too: every script, style sheet and image comes from the service itself."""
    response = await client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in response.text
    assets = re.findall(r"""(?:src|href)=["']([^"']+)["']""", response.text)
    assets += re.findall(r"""(?:Url|_url)\s*:\s*["']([^"']+)["']""", response.text)
    assert assets, response.text
    assert not re.search(r"https?://", response.text.replace("http://voicehooks.test", ""))
    if page == "/docs":
        assert '"validatorUrl": null' in response.text  # Swagger UI asks no validator online
    for asset in assets:
        if asset.endswith(".json"):
            continue
        fetched = await client.get(asset)
        assert fetched.status_code == 200, asset
        assert len(fetched.content) > 1000, asset


# --- fuzzing ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def api_schema(database_url):
    from tests.conftest import make_settings

    app = create_app(make_settings(database_url), database_url)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    return schema.include(path_regex="webhook-subscriptions")


_strategies: dict[tuple, st.SearchStrategy] = {}

# Plausible bodies: the schema alone says "string" where the service wants a URL, a status...
_statuses = st.sampled_from(["ringing", "completed", "accepted", "busy", "cancelled", "bogus"])
_filters = st.lists(
    st.fixed_dictionaries(
        {
            "key": st.sampled_from(["channelId", "status", "other"]),
            "value": st.one_of(_statuses, st.uuids().map(str), st.text(max_size=10)),
        }
    ),
    max_size=4,
)
_optional = {
    "url": st.sampled_from(
        ["https://example.com/hook", "https://93.184.216.34/x", "https://10.0.0.1/", "ftp://x/"]
    ),
    "signingKey": st.text(min_size=6, max_size=40),
    "eventFilters": _filters,
    "template": st.none() | st.text(max_size=30),
    "status": st.sampled_from(["active", "inactive"]),
}
plausible_create = st.fixed_dictionaries(
    {
        "service": st.just("channels"),
        "event": st.sampled_from(["voice.inbound", "voice.outbound"]),
        "url": _optional["url"],
    },
    optional={name: _optional[name] for name in ("signingKey", "eventFilters", "template")},
)
plausible_update = st.fixed_dictionaries({}, optional=_optional)


def _cases(api_schema, tenant) -> st.SearchStrategy:
    key = (id(api_schema), tenant.organization_id, tenant.workspace_id)
    if key not in _strategies:
        fixed = {
            "organizationId": str(tenant.organization_id),
            "workspaceId": str(tenant.workspace_id),
        }
        _strategies[key] = st.one_of(
            api_schema.as_strategy(GenerationMode.POSITIVE, path_parameters=fixed),
            api_schema.as_strategy(GenerationMode.NEGATIVE, path_parameters=fixed),
        )
    return _strategies[key]


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
async def test_fuzzed_requests_never_fail_and_match_the_schema(
    data, api_schema, client, tenant, db
):
    existing = await db.fetchval(
        "SELECT id FROM subscriptions WHERE workspace_id = $1 LIMIT 1", tenant.workspace_id
    )
    if existing is None:
        existing = uuid.UUID((await create_subscription(client, tenant, **SEED_BODY))["id"])
    case = data.draw(_cases(api_schema, tenant), label="case")
    if "subscriptionId" in case.path_parameters and data.draw(st.booleans(), label="known id"):
        case.path_parameters["subscriptionId"] = str(existing)
    writes = case.operation.path in (BASE, ONE) and case.method in ("POST", "PATCH")
    if writes and data.draw(st.booleans(), label="plausible body"):
        case.body = data.draw(plausible_create if case.method == "POST" else plausible_update)
    headers = {
        name: value
        for name, value in (case.headers or {}).items()
        if name.lower() != "authorization"
    }
    headers.update(tenant.headers)
    request: dict = {"headers": headers, "params": case.query or None}
    if isinstance(case.body, bytes):
        request["content"] = case.body
        headers.setdefault("content-type", case.media_type or "application/json")
    elif case.body is not NOT_SET:
        request["json"] = case.body
    response = await client.request(case.method, case.formatted_path, **request)
    assert response.status_code < 500, response.text
    case.validate_response(response, checks=CHECKS)
