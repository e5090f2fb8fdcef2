"""`voicehooks listen` (SPEC §5) as a real process, receiving from a real `voicehooks serve`:
it verifies and prints each delivery, relays to an app, answers as told, saves and replays
requests, and survives whatever is sent to it."""

import asyncio
import socket
from pathlib import Path

import httpx
import pytest

from tests.operations_helpers import free_port, run_voicehooks
from tests.receiving_helpers import (
    Listen,
    attempt_logs,
    report_call,
    subscribe,
    tool_environment,
)
from tests.support import Receiver, Reply, wait_until

KEY = "listen-signing-key-0001"


@pytest.fixture
async def listening(tmp_path):
    """Start `voicehooks listen <args>` with `await listening(*args)`; stopped afterwards."""
    started: list[Listen] = []

    async def start(*args: str) -> Listen:
        listen = Listen(tmp_path, *args)
        started.append(listen)
        return await listen.start()

    yield start
    for listen in started:
        await listen.stop()


async def test_each_delivery_is_verified_and_printed(api, tenant, listening):
    listen = await listening("--key", KEY, "--json")
    subscription = await subscribe(api, tenant, f"{listen.url}/hook", KEY)
    call_id = await report_call(api, tenant, "ringing", "ongoing")

    reports = await listen.wait_for_reports(2)
    assert [(r["event"], r["callId"], r["status"]) for r in reports] == [
        ("voice.inbound", call_id, "ringing"),
        ("voice.inbound", call_id, "ongoing"),
    ]
    logs = await attempt_logs(api, tenant, subscription["id"], 2)
    assert {r["deliveryId"] for r in reports} == {entry["deliveryId"] for entry in logs}
    for report in reports:
        assert report["verified"] is True and report["reason"] is None
        assert report["attempt"] == 1 and report["answer"] == 204
        assert report["method"] == "POST" and report["path"] == "/hook"
        assert 0 <= report["latencyMs"] < 10_000
    assert {entry["responseStatusCode"] for entry in logs} == {204}


async def test_readable_lines(api, tenant, listening):
    listen = await listening("--key", KEY)
    await subscribe(api, tenant, f"{listen.url}/hook", KEY)
    call_id = await report_call(api, tenant, "completed")
    (line,) = await listen.wait_for_lines(1)
    assert "voice.inbound" in line and call_id in line and "completed" in line
    assert "attempt 1" in line and "→ 204" in line and line.endswith("✓ verified")
    assert "verifying with 1 key" in listen.stderr()


async def test_a_wrong_key_is_refused_and_the_service_retries(api, tenant, listening):
    listen = await listening("--key", "not-the-subscriptions-key", "--json")
    subscription = await subscribe(api, tenant, f"{listen.url}/hook", KEY)
    await report_call(api, tenant, "ringing")

    reports = await listen.wait_for_reports(3)
    assert [r["attempt"] for r in reports[:3]] == [1, 2, 3]  # counted per webhook-id
    assert len({r["deliveryId"] for r in reports}) == 1
    for report in reports:
        assert report["verified"] is False and report["answer"] == 400
        assert "no webhook-signature entry matches" in report["reason"]
    logs = await attempt_logs(api, tenant, subscription["id"], 3)
    assert logs[0]["responseStatusCode"] == 400
    assert "no webhook-signature entry matches" in logs[0]["responseBody"]


async def test_keys_repeat_for_a_rotation(api, tenant, listening):
    both = await listening("--key", "the-new-key-00001", "--key", KEY, "--json")
    old_only = await listening("--key", KEY, "--json")
    for listen in (both, old_only):
        created = await subscribe(api, tenant, f"{listen.url}/hook", KEY)
        patched = await api.patch(
            tenant.subscription(created["id"]),
            json={"signingKey": "the-new-key-00001"},
            headers=tenant.headers,
        )
        assert patched.status_code == 200, patched.text
    await report_call(api, tenant, "ringing")

    (report,) = (await both.wait_for_reports(1))[:1]
    assert report["verified"] is True
    refused = (await old_only.wait_for_reports(1))[0]
    # The old key still signs webhook-signature, but Bird's header carries the new key alone.
    assert refused["verified"] is False
    assert "messagebird-signature does not match" in refused["reason"]


async def test_respond_makes_the_service_retry_until_it_gives_up(api, tenant, listening):
    listen = await listening("--respond", "503", "--json")
    subscription = await subscribe(api, tenant, f"{listen.url}/hook", KEY)
    await report_call(api, tenant, "busy")

    reports = await listen.wait_for_reports(4)  # 1 + the tests' three retry delays
    assert [(r["attempt"], r["answer"], r["verified"]) for r in reports] == [
        (n, 503, None) for n in (1, 2, 3, 4)
    ]
    logs = await attempt_logs(api, tenant, subscription["id"], 4)
    assert {entry["responseStatusCode"] for entry in logs} == {503}
    assert "not verifying (no --key)" in listen.stderr()


async def test_delay_beyond_the_delivery_timeout(api, tenant, listening):
    listen = await listening("--key", KEY, "--delay", "3", "--json")  # the timeout is 2 s
    subscription = await subscribe(api, tenant, f"{listen.url}/hook", KEY)
    await report_call(api, tenant, "ringing")

    logs = await attempt_logs(api, tenant, subscription["id"], 1)
    assert logs[-1]["error"] == "timeout"
    report = (await listen.wait_for_reports(1))[0]
    assert report["verified"] is True
    assert "hung up" in report["reason"]


async def test_forward_to_relays_the_exact_request_and_answers_the_apps_status(
    api, tenant, listening
):
    async with Receiver.running() as app:
        app.reply(Reply(202, body="taken by the app"))
        listen = await listening("--key", KEY, "--forward-to", f"{app.url}/app/hook", "--json")
        subscription = await subscribe(api, tenant, f"{listen.url}/hook", KEY)
        await report_call(api, tenant, "ringing")

        report = (await listen.wait_for_reports(1))[0]
        assert report["verified"] is True
        assert report["answer"] == 202 and report["forwarded"]["status"] == 202
        (relayed,) = app.requests
        assert relayed.path == "/app/hook"
        logs = await attempt_logs(api, tenant, subscription["id"], 1)
        assert logs[0]["responseStatusCode"] == 202
        assert logs[0]["responseBody"] == "taken by the app"

    # What the app got is what the service sent: body and every signature header.
    sent = {name.lower(): value for name, value in relayed.headers.items()}
    for name in (
        "webhook-id",
        "webhook-timestamp",
        "webhook-signature",
        "messagebird-signature",
        "messagebird-request-timestamp",
        "messagebird-request-id",
        "content-type",
        "user-agent",
    ):
        assert name in sent, name
    assert sent["webhook-id"] == report["deliveryId"]
    assert sent["user-agent"].startswith("voicehooks/")
    assert relayed.json()["payload"]["status"] == "ringing"
    from voicehooks.receiver import verify

    assert verify(relayed.body, relayed.headers, keys=KEY, tolerance=None)


async def test_forward_to_an_app_that_is_down(api, tenant, listening):
    down = f"http://127.0.0.1:{free_port()}/hook"
    listen = await listening("--key", KEY, "--forward-to", down, "--json")
    subscription = await subscribe(api, tenant, f"{listen.url}/hook", KEY)
    await report_call(api, tenant, "ringing")
    report = (await listen.wait_for_reports(1))[0]
    assert report["answer"] == 502
    assert report["forwarded"]["error"] == "connection refused"
    logs = await attempt_logs(api, tenant, subscription["id"], 1)
    assert logs[-1]["responseStatusCode"] == 502


async def test_save_and_replay(api, tenant, listening, tmp_path):
    saved = tmp_path / "saved"
    listen = await listening("--key", KEY, "--save", str(saved), "--json")
    await subscribe(api, tenant, f"{listen.url}/hook", KEY)
    call_id = await report_call(api, tenant, "ringing")
    delivered = (await listen.wait_for_reports(1))[0]
    (request_file,) = sorted(saved.iterdir())
    assert request_file.read_bytes().startswith(b"POST /hook HTTP/1.1\r\n")

    env = tool_environment()
    async with Receiver.running() as app:
        code, out, err = await run_voicehooks(
            env,
            "listen",
            "--replay",
            str(request_file),
            "--key",
            KEY,
            "--forward-to",
            f"{app.url}/hook",
        )
        assert code == 0, err
        assert call_id in out and "✓ verified" in out and "from the app" in out
        (relayed,) = app.requests
    original = request_file.read_bytes().partition(b"\r\n\r\n")[2]
    assert relayed.body == original
    assert relayed.headers["webhook-id"] == delivered["deliveryId"]

    code, out, _ = await run_voicehooks(
        env, "listen", "--replay", str(request_file), "--key", "another-key-0001"
    )
    assert code == 1 and "✗ no webhook-signature entry matches" in out
    code, _, err = await run_voicehooks(env, "listen", "--replay", str(saved))
    assert code != 0


async def test_garbage_is_answered_400_and_listening_goes_on(api, tenant, listening):
    listen = await listening("--key", KEY, "--json")
    async with httpx.AsyncClient(base_url=listen.url, timeout=30) as http:
        not_json = await http.post("/hook", content=b"\x00not json")
        assert not_json.status_code == 400
        assert (await http.post("/hook", json=[1, 2])).status_code == 400
        assert (await http.get("/hook")).status_code == 405
        huge = await http.post("/hook", content=b"x" * (12 * 1024 * 1024))
        assert huge.status_code == 413
        unsigned = await http.post("/hook", json={"event": "voice.inbound", "payload": {}})
        assert unsigned.status_code == 400
        assert "header webhook-id is missing" in unsigned.text
    # Not HTTP at all.
    reader, writer = await asyncio.open_connection("127.0.0.1", listen.port)
    writer.write(b"\x16\x03\x01 this is not HTTP\r\n\r\n")
    await writer.drain()
    answer = await asyncio.wait_for(reader.read(100), 10)
    assert answer.startswith(b"HTTP/1.") and answer[9:12] == b"400"
    writer.close()

    reports = await listen.wait_for_reports(5)
    assert [r["answer"] for r in reports] == [400, 400, 405, 413, 400]
    assert "not a JSON object" in reports[0]["reason"] and "over 11 MiB" in reports[3]["reason"]

    # Still listening, and still verifying.
    await subscribe(api, tenant, f"{listen.url}/hook", KEY)
    await report_call(api, tenant, "ringing")
    await wait_until(lambda: len(listen.reports()) == 6, timeout=20)
    assert listen.reports()[-1]["verified"] is True
    assert await listen.stop() == 0


async def test_a_port_in_use_is_one_clear_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, out, err = await run_voicehooks(tool_environment(), "listen", "--port", str(port))
    assert code == 1 and out == ""
    assert err.strip().count("\n") == 0 and f"cannot listen on 127.0.0.1:{port}" in err


async def test_forward_to_and_respond_do_not_go_together(tmp_path: Path):
    code, _, err = await run_voicehooks(
        tool_environment(), "listen", "--forward-to", "http://127.0.0.1:1/", "--respond", "500"
    )
    assert code == 2 and "--respond" in err
