"""`voicehooks trigger EVENT`: report a call event through the ingestion API, as the voice
platform does; `--call` reports a whole call, one status after the other."""

import asyncio
import json
import os
import uuid
from typing import Annotated, Any

import typer

from voicehooks.voice import CALL_LIFE_CYCLES, CALL_STATUSES, EVENTS

EXAMPLE_CHANNEL = "b827924e-9789-4c2f-a4d5-b352175354f6"  # the SPEC's seed example
NUMBERS = {"from": "+31612345678", "to": "+31201234567"}
TIMEOUT = 30.0


class Refused(Exception):
    """One line that says why nothing (more) was reported."""


def call_payload(event: str, call_id: str, channel: str, status: str) -> dict[str, Any]:
    direction = "incoming" if event == "voice.inbound" else "outgoing"
    return {
        "id": call_id,
        "channelId": channel,
        "status": status,
        "direction": direction,
        **NUMBERS,
    }


def statuses_to_report(event: str, status: str | None, call: bool) -> tuple[str, ...]:
    """The statuses to report in order; Refused when they are not of the event."""
    if event not in EVENTS:
        raise Refused(f"unknown event {event!r}: one of {', '.join(EVENTS)}")
    if call:
        endings = CALL_LIFE_CYCLES[event]
        ending = status or "completed"
        if ending not in endings:
            raise Refused(
                f"with --call, --status is how the call ends: one of {', '.join(endings)}"
            )
        return endings[ending]
    chosen = status or "ringing"
    if chosen not in CALL_STATUSES[event]:
        raise Refused(
            f"{chosen!r} is not a status of {event}: one of {', '.join(CALL_STATUSES[event])}"
        )
    return (chosen,)


def _uuid(value: str, option: str) -> str:
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise Refused(f"{option} must be a UUID, not {value!r}") from None


def _refusal(status: int, text: str) -> str:
    """The service's answer as one line: its problem detail and field errors."""
    try:
        problem = json.loads(text)
    except ValueError:
        problem = None
    if not isinstance(problem, dict):
        return f"ingestion answered {status}: {' '.join(text.split())[:200]}"
    line = f"ingestion answered {status} {problem.get('title', '')}: {problem.get('detail', '')}"
    fields = [f"{e.get('field')}: {e.get('message')}" for e in problem.get("errors") or ()]
    if fields:
        line += " (" + "; ".join(fields) + ")"
    if status == 401:
        line += " — set VOICEHOOKS_INGEST_TOKEN to the service's ingest token"
    return line


async def report(base_url: str, token: str, items: list[dict[str, Any]], json_lines: bool) -> None:
    """POST each item in turn (each accepted before the next: ingestion order is call order)."""
    import aiohttp

    endpoint = base_url.rstrip("/") + "/internal/v1/events"
    headers = {"Authorization": f"Bearer {token}"}
    timeout = aiohttp.ClientTimeout(total=TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        for item in items:
            try:
                async with session.post(endpoint, json=item, headers=headers) as response:
                    status, text = response.status, await response.text(errors="replace")
            except (aiohttp.ClientError, OSError, TimeoutError) as error:
                raise Refused(
                    f"cannot reach {base_url} ({_why(error)}): is `voicehooks serve` running there?"
                ) from None
            if status != 202:
                raise Refused(_refusal(status, text))
            try:
                result = json.loads(text)
            except ValueError:
                raise Refused(
                    f"{endpoint} answered 202 but not with JSON: is it voicehooks?"
                ) from None
            print(_result_line(item, result, json_lines), flush=True)


def _why(error: BaseException) -> str:
    cause = getattr(error, "os_error", None) or error
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    if isinstance(cause, TimeoutError):
        return "timed out"
    return str(cause) or type(cause).__name__


def _result_line(item: dict[str, Any], result: dict[str, Any], json_lines: bool) -> str:
    payload = item["payload"]
    if json_lines:
        line = {"event": item["event"], "callId": payload["id"], "status": payload["status"]}
        return json.dumps(line | result)
    count = result.get("deliveries")
    plural = "delivery" if count == 1 else "deliveries"
    duplicate = " (duplicate)" if result.get("duplicate") else ""
    return (
        f"{item['event']}  {payload['id']}  {payload['status']}  → 202 "
        f"event {result.get('id')}, {count} {plural}{duplicate}"
    )


def trigger(
    event: Annotated[str, typer.Argument(help="voice.inbound or voice.outbound.")],
    workspace: Annotated[
        str,
        typer.Option(
            "--workspace",
            metavar="UUID",
            help="The workspace's id (`voicehooks bootstrap` prints it).",
        ),
    ],
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            metavar="STATUS",
            help="The call status (default ringing); with --call, how the call ends "
            "(default completed).",
        ),
    ] = None,
    channel: Annotated[
        str, typer.Option("--channel", metavar="UUID", help="The channel's id (a UUID).")
    ] = EXAMPLE_CHANNEL,
    call_id: Annotated[
        str | None,
        typer.Option("--call-id", metavar="ID", help="The call's id (default: a new one)."),
    ] = None,
    call: Annotated[
        bool,
        typer.Option(
            "--call",
            help="Report a whole call life cycle in order: inbound starting → ringing → "
            "ongoing → completed (or no-answer, busy, failed); outbound starts accepted.",
        ),
    ] = False,
    url: Annotated[
        str, typer.Option("--url", metavar="URL", help="The service's base URL.")
    ] = "http://127.0.0.1:8000",
    json_lines: Annotated[
        bool, typer.Option("--json", help="Each ingestion result as one JSON object per line.")
    ] = False,
) -> None:
    """Report a call event through the ingestion API, as the voice platform does.

    Reads the Bearer token from VOICEHOOKS_INGEST_TOKEN. Prints one line per event:
    its status and the ingestion result (event id, how many deliveries).
    """
    try:
        statuses = statuses_to_report(event, status, call)
        workspace_id = _uuid(workspace, "--workspace")
        channel_id = _uuid(channel, "--channel")
        token = os.environ.get("VOICEHOOKS_INGEST_TOKEN")
        if not token:
            raise Refused("set VOICEHOOKS_INGEST_TOKEN to the service's ingest token")
        call_id = call_id or f"call-{uuid.uuid4().hex[:12]}"
        items = [
            {
                "workspaceId": workspace_id,
                "event": event,
                "payload": call_payload(event, call_id, channel_id, each),
            }
            for each in statuses
        ]
        asyncio.run(report(url, token, items, json_lines))
    except Refused as refusal:
        typer.echo(f"voicehooks trigger: {refusal}", err=True)
        raise typer.Exit(1) from None
