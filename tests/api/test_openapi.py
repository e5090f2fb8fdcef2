"""The OpenAPI document, and a schema-driven fuzz of the subscriptions API against it."""

import asyncio
import os
import re
import sys
import uuid
from pathlib import Path

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

from tests.operations_helpers import running_api, wait_for_readyz
from tests.subscriptions_helpers import PROBLEM_JSON, SUBSCRIPTION_FIELDS
from tests.support import INGEST_TOKEN, SEED_BODY, TEST_ENCRYPTION_KEY, create_subscription
from voicehooks.api.app import create_app
from voicehooks.voice import CALL_STATUSES

BASE = "/organizations/{organizationId}/workspaces/{workspaceId}/webhook-subscriptions"
ONE = BASE + "/{subscriptionId}"
# (path, method): (operationId, request body, success status, success body)
PUBLIC_OPERATIONS = {
    (BASE, "post"): ("createSubscription", "SubscriptionCreate", "201", "SubscriptionOut"),
    (BASE, "get"): ("listSubscriptions", None, "200", "SubscriptionPage"),
    (ONE, "get"): ("getSubscription", None, "200", "SubscriptionOut"),
    (ONE, "patch"): ("updateSubscription", "SubscriptionUpdate", "200", "SubscriptionOut"),
    (ONE, "delete"): ("deleteSubscription", None, "204", None),
    (ONE + "/logs", "get"): ("listAttempts", None, "200", "AttemptPage"),
    (ONE + "/logs/details", "get"): ("getAttemptDetails", None, "200", "AttemptDetails"),
    (ONE + "/deliveries", "get"): ("listDeliveries", None, "200", "DeliveryPage"),
    (ONE + "/deliveries/{deliveryId}/retry", "post"): ("retryDelivery", None, "202", "DeliveryOut"),
    (ONE + "/recover", "post"): ("recoverDeliveries", "RecoverIn", "202", "RecoverOut"),
    (ONE + "/test", "post"): ("sendTestEvent", None, "202", "TestOut"),
    ("/organizations/{organizationId}/workspaces/{workspaceId}/portal-sessions", "post"): (
        "createPortalSession",
        "PortalSessionCreate",
        "201",
        "PortalSessionOut",
    ),
}
INTERNAL_OPERATIONS = {
    ("/internal/v1/events", "post"): ("ingestEvent", "EventIn", "202", "IngestResult"),
    ("/internal/v1/events/batch", "post"): ("ingestEvents", "EventBatchIn", "202", "BatchResult"),
}
ERRORS = {
    "401": "Unauthorized",
    "404": "NotFound",
    "409": "Conflict",
    "413": "ContentTooLarge",
    "422": "UnprocessableContent",
    "503": "ServiceUnavailable",
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


@pytest.fixture
async def internal_document(client):
    response = await client.get("/internal/openapi.json")
    assert response.status_code == 200
    return response.json()


def _ref(schema: dict) -> str:
    return schema["$ref"].rsplit("/", 1)[-1]


def _operations(document: dict):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            yield path, method, operation


async def test_every_operation_is_documented_once_in_its_document(document, internal_document):
    assert document["openapi"].startswith("3.")
    public = {(path, method) for path, method, _ in _operations(document)}
    internal = {(path, method) for path, method, _ in _operations(internal_document)}
    assert set(PUBLIC_OPERATIONS) <= public
    assert set(INTERNAL_OPERATIONS) == internal
    # The ingestion API is in its own document only, with its own security scheme.
    assert not any(path.startswith("/internal/") for path, _ in public)
    assert set(document["components"]["securitySchemes"]) == {"AccessKey"}
    assert set(internal_document["components"]["securitySchemes"]) == {"IngestToken"}
    for path in ("/healthz", "/readyz", "/metrics"):
        assert "get" in document["paths"][path]


@pytest.mark.parametrize(
    ("path", "method"), sorted(PUBLIC_OPERATIONS) + sorted(INTERNAL_OPERATIONS)
)
async def test_operations_are_named_described_and_answer_problems(
    document, internal_document, path, method
):
    internal = path.startswith("/internal/")
    doc = internal_document if internal else document
    expected = (INTERNAL_OPERATIONS if internal else PUBLIC_OPERATIONS)[path, method]
    operation_id, request_model, success, response_model = expected
    operation = doc["paths"][path][method]
    schemas = doc["components"]["schemas"]
    assert operation["operationId"] == operation_id
    assert operation["tags"] and operation["summary"] and len(operation["description"]) > 20
    if request_model is not None:
        content = operation["requestBody"]["content"]
        assert set(content) == {"application/json"}
        assert _ref(content["application/json"]["schema"]) == request_model
        assert content["application/json"]["examples"], "a realistic example of the body"
    assert success in operation["responses"]
    if response_model is not None:
        answer = operation["responses"][success]["content"]["application/json"]["schema"]
        assert _ref(answer) == response_model
        assert schemas[response_model]["examples"]
    # Errors: references to the one declaration of each, problem+json only.
    statuses = {"401", "404", "422", "503"} - ({"404"} if internal else set())
    assert statuses <= set(operation["responses"])
    for status, answer in operation["responses"].items():
        if status.startswith(("4", "5")):
            name = ERRORS[status]
            assert answer == {"$ref": f"#/components/responses/{name}"}
            declared = doc["components"]["responses"][name]
            assert set(declared["content"]) == {PROBLEM_JSON}
            assert _ref(declared["content"][PROBLEM_JSON]["schema"]) == "Problem"
    assert "WWW-Authenticate" in doc["components"]["responses"]["Unauthorized"]["headers"]
    scheme = "IngestToken" if internal else "AccessKey"
    assert operation["security"] == [{scheme: []}]


async def test_every_operation_has_a_name_a_tag_and_a_description(document, internal_document):
    for doc in (document, internal_document):
        for path, method, operation in _operations(doc):
            assert operation["operationId"][0].islower(), (path, method)
            assert "_" not in operation["operationId"], (path, method)
            assert operation["tags"] and operation.get("description"), (path, method)
        tags = {tag["name"] for tag in doc["tags"]}
        assert {tag for _, _, op in _operations(doc) for tag in op["tags"]} <= tags


async def test_security_schemes_are_declared_as_bird_does(document, internal_document):
    access_key = document["components"]["securitySchemes"]["AccessKey"]
    assert (access_key["type"], access_key["scheme"]) == ("http", "AccessKey")
    bearer = internal_document["components"]["securitySchemes"]["IngestToken"]
    assert (bearer["type"], bearer["scheme"].lower()) == ("http", "bearer")


async def test_subscription_schemas_say_what_the_service_takes(document):
    schemas = document["components"]["schemas"]
    assert set(schemas["SubscriptionOut"]["properties"]) == SUBSCRIPTION_FIELDS
    create = schemas["SubscriptionCreate"]
    assert set(create["required"]) == {"service", "event", "url"}
    assert SEED_BODY in create["examples"]
    operation = document["paths"][BASE]["post"]
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    assert SEED_BODY in [example["value"] for example in examples.values()]

    url = create["properties"]["url"]
    assert (url["format"], url["maxLength"]) == ("uri", 2048)
    assert re.match(url["pattern"], "https://example.com:8443/hook")
    assert re.match(url["pattern"], "http://example.com/")
    assert not re.match(url["pattern"], "ftp://example.com/")
    key = next(item for item in create["properties"]["signingKey"]["anyOf"] if "pattern" in item)
    assert re.fullmatch(key["pattern"], "mysecretkey") and re.fullmatch(key["pattern"], "x" * 512)
    for refused in ("short", "x" * 513, "with\nnewline", "tab\tkey-key"):
        assert not re.fullmatch(key["pattern"], refused)

    update = schemas["SubscriptionUpdate"]
    assert set(update["properties"]) == {"url", "signingKey", "status", "eventFilters", "template"}
    assert update["minProperties"] == 1 and update["additionalProperties"] is False
    for name in ("url", "signingKey", "status"):  # null is refused for these
        assert "anyOf" not in update["properties"][name]
        assert update["properties"][name].get("type") == "string"
    for name in ("eventFilters", "template"):  # null means none
        assert {"type": "null"} in update["properties"][name]["anyOf"]

    event_filter = schemas["EventFilter"]
    assert event_filter["discriminator"]["propertyName"] == "key"
    channel = schemas["ChannelIdFilter"]["properties"]["value"]
    assert channel["format"] == "uuid"
    assert set(schemas["StatusFilter"]["properties"]["value"]["enum"]) == {
        status for statuses in CALL_STATUSES.values() for status in statuses
    }
    assert set(schemas["SubscriptionPage"]["properties"]) == {"results", "nextPageToken"}
    assert set(schemas["Problem"]["properties"]) >= {"type", "title", "status", "detail", "errors"}
    assert "HTTPValidationError" not in schemas  # FastAPI's own error shape is never answered


async def test_list_parameters_are_bounded(document):
    parameters = {item["name"]: item for item in document["paths"][BASE]["get"]["parameters"]}
    limit = parameters["limit"]["schema"]
    assert (limit["minimum"], limit["maximum"], limit["default"]) == (1, 100, 10)
    for name in ("organizationId", "workspaceId"):
        assert parameters[name]["schema"]["format"] == "uuid"
    details = document["paths"][ONE + "/logs/details"]["get"]["parameters"]
    (request_id,) = [item for item in details if item["name"] == "requestId"]
    assert request_id["required"] is True and request_id["schema"]["format"] == "uuid"


async def test_ingested_payload_status_depends_on_the_event(internal_document):
    schemas = internal_document["components"]["schemas"]
    union = schemas["EventIn"]
    assert union["discriminator"]["propertyName"] == "event"
    for name, event in (
        ("InboundCallEvent", "voice.inbound"),
        ("OutboundCallEvent", "voice.outbound"),
    ):
        assert union["discriminator"]["mapping"][event].endswith("/" + name)
        payload = schemas[name]["properties"]["payload"]
        assert payload["properties"]["status"]["enum"] == list(CALL_STATUSES[event])
        assert payload["properties"]["channelId"]["format"] == "uuid"
        assert set(payload["required"]) == {"id", "channelId", "status"}


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
    from tests.support import make_settings

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


# --- the document, as tools outside this process read it ---------------------------------

TOOLS = Path(sys.executable).parent  # the console scripts of this environment
REPOSITORY = Path(__file__).resolve().parents[2]


async def _run_tool(*args: object, env: dict[str, str], timeout: float) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        *(str(arg) for arg in args),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, output.decode(errors="replace")


async def test_schemathesis_with_every_check_finds_nothing(database_url, tenant, tmp_path):
    """`schemathesis run --checks all` against a real `voicehooks api`, with a valid key,
    over the public document: examples, coverage, fuzzing and stateful (links) phases."""
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'headers = {{ Authorization = "AccessKey {tenant.access_key}" }}\n'
        "[parameters]\n"
        f'"path.organizationId" = "{tenant.organization_id}"\n'
        f'"path.workspaceId" = "{tenant.workspace_id}"\n'
    )
    # Production target rules (https only, no internal address): no VOICEHOOKS_ALLOW_* here.
    env = {key: value for key, value in os.environ.items() if not key.startswith("VOICEHOOKS_")}
    env.update(
        VOICEHOOKS_DATABASE_URL=database_url,
        VOICEHOOKS_INGEST_TOKEN=INGEST_TOKEN,
        VOICEHOOKS_ENCRYPTION_KEYS=TEST_ENCRYPTION_KEY,
    )
    async with running_api(env, tmp_path / "api.log") as api:
        await wait_for_readyz(api)
        tool_env = {
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
            "PYTHONPATH": str(REPOSITORY),
        }
        code, output = await _run_tool(
            TOOLS / "schemathesis",
            "--config-file",
            config,
            "run",
            str(api.base_url.join("/openapi.json")),
            "--checks",
            "all",
            "--max-examples",
            "40",
            "--seed",
            "20261201",
            "--workers",
            "1",
            "--generation-database",
            "none",
            "--no-color",
            env=tool_env,
            timeout=600,
        )
    assert code == 0, output[-6000:]
    assert "Stateful" in output and " passed" in output, output[-3000:]


PUBLIC_MODULES = {
    "create_subscription",
    "list_subscriptions",
    "get_subscription",
    "update_subscription",
    "delete_subscription",
    "list_attempts",
    "get_attempt_details",
    "list_deliveries",
    "retry_delivery",
    "recover_deliveries",
    "send_test_event",
    "create_portal_session",
    "get_health",
    "get_readiness",
    "get_metrics",
}


@pytest.mark.parametrize(
    ("document_path", "modules"),
    [
        ("/openapi.json", PUBLIC_MODULES),
        ("/internal/openapi.json", {"ingest_event", "ingest_events"}),
    ],
)
async def test_a_generated_client_has_readable_names_and_no_warnings(
    client, tmp_path, document_path, modules
):
    source = tmp_path / "openapi.json"
    source.write_text((await client.get(document_path)).text)
    env = {**os.environ, "PATH": f"{TOOLS}{os.pathsep}{os.environ.get('PATH', '')}"}  # its ruff
    code, output = await _run_tool(
        TOOLS / "openapi-python-client",
        "generate",
        "--path",
        source,
        "--meta",
        "none",
        "--output-path",
        tmp_path / "client",
        env=env,
        timeout=300,
    )
    assert code == 0, output
    assert "warning" not in output.lower(), output
    generated = {
        path.stem for path in (tmp_path / "client" / "api").rglob("*.py") if path.stem != "__init__"
    }
    assert generated == modules
