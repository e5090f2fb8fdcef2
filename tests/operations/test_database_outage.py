"""SPEC §2: while the database cannot be reached, every operation that needs it answers 503
problem+json with Retry-After (never 500), on a keep-alive connection that stays usable; the
process logs the outage once, without tracebacks."""

import asyncio
import json
import uuid

from tests.delivery_helpers import closed_port
from tests.operations_helpers import running_api, service_environment, wait_for_readyz
from tests.support import INGEST_TOKEN, call_event


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, method: str, path: str, **kw: str
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 request on an open connection; (status, headers, body)."""
    body = kw.get("body", "").encode()
    head = [f"{method} {path} HTTP/1.1", "Host: voicehooks", f"Content-Length: {len(body)}"]
    head += [f"{name}: {value}" for name, value in kw.items() if name != "body"]
    writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 30)
    headers: dict[str, str] = {}
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    content = await reader.readexactly(int(headers["content-length"]))
    return int(status_line.split()[1]), headers, content


async def test_an_unreachable_database_is_503_with_retry_after_on_a_connection_that_stays_open(
    tmp_path,
):
    dead = f"postgresql://postgres@127.0.0.1:{closed_port()}/voicehooks"
    env = service_environment(dead, VOICEHOOKS_INGEST_TOKEN=INGEST_TOKEN)
    log_path = tmp_path / "api.log"
    async with running_api(env, log_path) as api:
        await wait_for_readyz(api, status=503)
        port = api.base_url.port
        assert port is not None
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            base = f"/organizations/{uuid.uuid4()}/workspaces/{uuid.uuid4()}/webhook-subscriptions"
            requests = [
                ("GET", base, {"Authorization": "AccessKey some-key"}),
                (
                    "POST",
                    "/internal/v1/events",
                    {
                        "Authorization": f"Bearer {INGEST_TOKEN}",
                        "Content-Type": "application/json",
                        "body": json.dumps(call_event(uuid.uuid4())),
                    },
                ),
            ] * 3
            for method, path, extra in requests:
                status, headers, content = await _exchange(reader, writer, method, path, **extra)
                assert status == 503, content
                assert headers["content-type"].startswith("application/problem+json")
                assert int(headers["retry-after"]) >= 1
                assert headers.get("connection") != "close"
                assert json.loads(content)["status"] == 503
        finally:
            writer.close()
    log = log_path.read_text()
    assert "Traceback" not in log
    assert log.count("database_unavailable") == 1, log
