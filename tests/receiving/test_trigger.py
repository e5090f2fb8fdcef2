"""`voicehooks trigger` (SPEC §5) as a real process against a real `voicehooks serve`: one event
or a whole call life cycle, reported in order; bad input and a down service are one clear line
and a non-zero exit."""

import json
import uuid

import pytest

from tests.operations_helpers import free_port, run_voicehooks
from tests.receiving_helpers import Listen, subscribe, tool_environment
from tests.support import Receiver, wait_until
from voicehooks.trigger import EXAMPLE_CHANNEL, statuses_to_report
from voicehooks.voice import CALL_LIFE_CYCLES, CALL_STATUSES

KEY = "trigger-signing-key-0001"


async def trigger(service: str, *args: str, **env: str) -> tuple[int, str, str]:
    return await run_voicehooks(tool_environment(**env), "trigger", "--url", service, *args)


# -- the life cycles ----------------------------------------------------------------------------


@pytest.mark.parametrize("event", list(CALL_LIFE_CYCLES))
def test_every_life_cycle_is_made_of_the_events_statuses(event):
    endings = CALL_LIFE_CYCLES[event]
    for ending, statuses in endings.items():
        assert statuses[-1] == ending
        assert all(status in CALL_STATUSES[event] for status in statuses)
        assert len(set(statuses)) == len(statuses)
        assert statuses_to_report(event, ending, call=True) == statuses
    first = "accepted" if event == "voice.outbound" else "starting"
    assert {statuses[0] for statuses in endings.values()} == {first}
    assert statuses_to_report(event, None, call=True)[-1] == "completed"


# -- against the service ------------------------------------------------------------------------


async def test_one_event(api, service, tenant, db):
    async with Receiver.running() as receiver:
        await subscribe(api, tenant, f"{receiver.url}/hook", KEY)
        code, out, err = await trigger(
            service,
            "voice.inbound",
            "--workspace",
            str(tenant.workspace_id),
            "--status",
            "no-answer",
            "--call-id",
            "call-42",
        )
        assert code == 0, err
        await wait_until(lambda: len(receiver.requests) == 1)
    (line,) = out.splitlines()
    assert line.startswith("voice.inbound  call-42  no-answer  → 202 event ")
    assert line.endswith(", 1 delivery")
    event_id = line.split("event ")[1].split(",")[0]
    stored = await db.fetchval("SELECT count(*) FROM events WHERE id = $1", uuid.UUID(event_id))
    assert stored == 1
    assert receiver.requests[0].json() == {
        "service": "channels",
        "event": "voice.inbound",
        "payload": {
            "id": "call-42",
            "channelId": EXAMPLE_CHANNEL,
            "status": "no-answer",
            "direction": "incoming",
            "from": "+31612345678",
            "to": "+31201234567",
        },
    }


async def test_json_results(api, service, tenant):
    channel = str(uuid.uuid4())
    code, out, err = await trigger(
        service,
        "voice.outbound",
        "--workspace",
        str(tenant.workspace_id),
        "--channel",
        channel,
        "--json",
    )
    assert code == 0, err
    (result,) = [json.loads(line) for line in out.splitlines()]
    assert result["event"] == "voice.outbound" and result["status"] == "ringing"
    assert result["deliveries"] == 0 and result["duplicate"] is False
    uuid.UUID(result["id"])
    assert result["callId"].startswith("call-")


async def test_a_whole_inbound_call_arrives_verified_and_in_order(api, service, tenant, tmp_path):
    listen = await Listen(tmp_path, "--key", KEY, "--json").start()
    try:
        await subscribe(api, tenant, f"{listen.url}/hook", KEY)
        code, out, err = await trigger(
            service, "voice.inbound", "--call", "--workspace", str(tenant.workspace_id)
        )
        assert code == 0, err
        statuses = [line.split("  ")[2] for line in out.splitlines()]
        assert statuses == ["starting", "ringing", "ongoing", "completed"]
        reports = await listen.wait_for_reports(4)
    finally:
        await listen.stop()
    assert [r["status"] for r in reports] == ["starting", "ringing", "ongoing", "completed"]
    assert len({r["callId"] for r in reports}) == 1
    assert all(r["verified"] for r in reports)


async def test_an_outbound_call_that_ends_busy(api, service, tenant):
    async with Receiver.running() as receiver:
        await subscribe(
            api, tenant, f"{receiver.url}/hook", KEY, event="voice.outbound"
        )  # fmt: skip
        code, _, err = await trigger(
            service,
            "voice.outbound",
            "--call",
            "--status",
            "busy",
            "--call-id",
            "out-1",
            "--workspace",
            str(tenant.workspace_id),
        )
        assert code == 0, err
        await wait_until(lambda: len(receiver.requests) == 3)
    payloads = [request.json()["payload"] for request in receiver.requests]
    assert [p["status"] for p in payloads] == ["accepted", "starting", "busy"]
    assert {(p["id"], p["direction"]) for p in payloads} == {("out-1", "outgoing")}


# -- refusals -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("voice.inbound", "--status", "accepted"), "'accepted' is not a status of voice.inbound"),
        (("voice.inbound", "--status", "nonsense"), "is not a status of voice.inbound"),
        (("voice.inbound", "--call", "--status", "ringing"), "how the call ends"),
        (("voice.missed",), "unknown event 'voice.missed'"),
        (("voice.inbound", "--channel", "channel-7"), "--channel must be a UUID"),
    ],
)
async def test_bad_input_is_one_line_and_reports_nothing(service, tenant, db, args, words):
    code, out, err = await trigger(service, *args, "--workspace", str(tenant.workspace_id))
    assert code == 1 and out == ""
    assert err.count("\n") == 1 and err.startswith("voicehooks trigger: ") and words in err
    assert await db.fetchval("SELECT count(*) FROM events") == 0


async def test_a_workspace_that_is_not_a_uuid(service):
    code, _, err = await trigger(service, "voice.inbound", "--workspace", "default")
    assert code == 1 and "--workspace must be a UUID" in err and err.count("\n") == 1


async def test_a_service_that_is_down():
    down = f"http://127.0.0.1:{free_port()}"
    code, out, err = await run_voicehooks(
        tool_environment(), "trigger", "voice.inbound", "--url", down,
        "--workspace", str(uuid.uuid4()),
    )  # fmt: skip
    assert code == 1 and out == ""
    assert err == f"voicehooks trigger: cannot reach {down} (connection refused): " + (
        "is `voicehooks serve` running there?\n"
    )


async def test_without_or_with_a_wrong_token(service, tenant):
    workspace = ("--workspace", str(tenant.workspace_id))
    env = {key: value for key, value in tool_environment().items() if "INGEST" not in key}
    code, _, err = await run_voicehooks(
        env, "trigger", "voice.inbound", "--url", service, *workspace
    )
    assert code == 1 and "set VOICEHOOKS_INGEST_TOKEN" in err and err.count("\n") == 1

    code, _, err = await trigger(
        service, "voice.inbound", *workspace, VOICEHOOKS_INGEST_TOKEN="wrong"
    )
    assert code == 1 and err.count("\n") == 1
    assert "ingestion answered 401" in err and "VOICEHOOKS_INGEST_TOKEN" in err
