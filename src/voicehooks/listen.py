"""`voicehooks listen`: a local receiver for development that verifies and prints deliveries.

One line per request on stdout (or one JSON object with `--json`); where it listens on stderr.
It verifies with `voicehooks.receiver`, the module a receiver uses, so what it says is what
`verify` says. Requests that are not deliveries (not JSON, over the size cap) are answered
400 or 413 and printed; nothing a client sends stops it.
"""

import asyncio
import inspect
import json
import sys
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from voicehooks.receiver import DEFAULT_TOLERANCE, InvalidSignature, verify

# Ingestion takes bodies up to 10 MiB; a delivery wraps one payload in a few bytes more.
MAX_BODY = 11 * 1024 * 1024
FORWARD_TIMEOUT = 30.0
# Attempt numbers are counted per webhook-id for this many recent deliveries.
REMEMBERED_DELIVERIES = 100_000
AUTO_HEADERS = ("User-Agent", "Accept", "Accept-Encoding", "Content-Type")
HOP_BY_HOP = frozenset(
    {
        "connection",
        "content-length",
        "host",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)

VERIFYING_HELP = """\
Your app verifies deliveries with the subscription's signingKey exactly
as set, taken as UTF-8 bytes (not base64):

Python: Webhook(key.encode()).verify(body, headers)  (standardwebhooks)
  or voicehooks.receiver.verify(body, headers, keys=key, url=url)

Node (standardwebhooks or svix):
  new Webhook(new TextEncoder().encode(key), {format: "raw"})
  A plain string key breaks non-ASCII keys; new Webhook(key) expects
  base64.

Bird: messagebird-signature is base64(HMAC-SHA256(key,
  messagebird-request-timestamp + "\\n" + subscription URL + "\\n"
  + SHA-256(body) as 32 raw bytes)).
"""


@dataclass
class Report:
    """What one request was, and what listen answered."""

    time: str
    method: str
    path: str
    answer: int
    event: str | None = None
    callId: str | None = None
    status: str | None = None
    deliveryId: str | None = None
    attempt: int | None = None
    latencyMs: int | None = None
    verified: bool | None = None
    reason: str | None = None
    forwarded: dict[str, Any] | None = field(default=None)

    def line(self) -> str:
        clock = self.time[11:19]
        if self.event is None:
            return f"{clock}  {self.method} {self.path}  → {self.answer}  ✗ {self.reason}"
        latency = "" if self.latencyMs is None else f"  {self.latencyMs / 1000:.1f} s"
        if self.verified is None:
            mark = "· not verified (no --key)"
        else:
            mark = "✓ verified" if self.verified else f"✗ {self.reason}"
        answer = f"→ {self.answer}"
        if self.forwarded is not None:
            answer += f" ({self.forwarded['note']})"
        return (
            f"{clock}  {self.event:<14}  {self.callId or '-'}  {self.status or '-':<9}  "
            f"attempt {self.attempt or '-'}{latency}  {answer}  {mark}"
        )


@dataclass
class Listener:
    keys: list[str]
    forward_to: str | None = None
    respond: int | None = None
    delay: float = 0.0
    save: Path | None = None
    json_lines: bool = False
    public_url: str | None = None
    attempts: OrderedDict[str, int] = field(default_factory=OrderedDict)
    saved: int = 0
    session: Any = None  # an aiohttp.ClientSession while forwarding

    def emit(self, report: Report) -> None:
        text = json.dumps(asdict(report), ensure_ascii=False) if self.json_lines else report.line()
        print(text, flush=True)

    def count_attempt(self, delivery_id: str) -> int:
        attempt = self.attempts.pop(delivery_id, 0) + 1
        self.attempts[delivery_id] = attempt
        if len(self.attempts) > REMEMBERED_DELIVERIES:
            self.attempts.popitem(last=False)
        return attempt

    def signed_url(self, host: str, raw_path: str) -> str:
        """The URL Bird's scheme signed: the subscription's, as this request reached us."""
        base = self.public_url.rstrip("/") if self.public_url else f"http://{host}"
        return base + raw_path

    def save_request(self, raw: bytes) -> None:
        if self.save is None:
            return
        self.saved += 1
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%f")
        (self.save / f"{stamp}-{self.saved:06d}.http").write_bytes(raw)

    def examine(
        self,
        *,
        method: str,
        host: str,
        raw_path: str,
        headers: list[tuple[str, str]],
        body: bytes,
        received: float,
        tolerance: float | None = DEFAULT_TOLERANCE,
    ) -> Report:
        """A report of the request, before answering: answer 400 unless it is a delivery."""
        report = Report(_iso(received), method, raw_path, 400)
        if method != "POST":
            report.answer, report.reason = 405, "not a delivery: deliveries are POSTs"
            return report
        try:
            event = json.loads(body)
        except (ValueError, RecursionError):
            event = None
        if not isinstance(event, dict):
            report.reason = "not a delivery: the body is not a JSON object"
            return report
        named = {name.lower(): value for name, value in headers}
        payload = event.get("payload")
        if not isinstance(payload, dict):
            payload = {}
        report.event = _text(event.get("event"))
        report.callId = _text(payload.get("id"))
        report.status = _text(payload.get("status"))
        report.deliveryId = named.get("webhook-id")
        if report.deliveryId:
            report.attempt = self.count_attempt(report.deliveryId)
        stamp = named.get("webhook-timestamp", "")
        if stamp.isascii() and stamp.isdigit() and len(stamp) <= 12:
            report.latencyMs = round((received - int(stamp)) * 1000)
        if self.keys:
            url = self.signed_url(named.get("host", host), raw_path)
            try:
                verify(body, headers, keys=self.keys, url=url, tolerance=tolerance)
                report.verified = True
            except InvalidSignature as error:
                report.verified, report.reason = False, str(error)
        report.answer = 400 if report.verified is False else 204
        if self.respond is not None:
            report.answer = self.respond
        return report

    async def forward(
        self, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, bytes, str, int]:
        """Relay the request to the app: its answer's status, body, content type, and ms."""
        import aiohttp

        assert self.forward_to is not None
        if self.session is None:
            self.session = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=FORWARD_TIMEOUT), auto_decompress=False
            )
        relayed = [(name, value) for name, value in headers if name.lower() not in HOP_BY_HOP]
        sent = {name.lower() for name, _ in relayed}
        started = time.perf_counter()
        async with self.session.post(
            self.forward_to,
            data=body,
            headers=relayed,
            allow_redirects=False,
            # Only what the sender sent: aiohttp adds none of its own defaults.
            skip_auto_headers=[name for name in AUTO_HEADERS if name.lower() not in sent],
        ) as response:
            answer = await response.content.read(MAX_BODY)
            elapsed = round((time.perf_counter() - started) * 1000)
            content_type = response.headers.get("content-type", "text/plain")
            return response.status, answer, content_type, elapsed

    async def answer_with_app(
        self, report: Report, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[bytes, str]:
        """Forward, and note in the report what the app answered: the body and content type
        to answer with (502 when the app could not be reached)."""
        import aiohttp

        try:
            status, answer, content_type, elapsed = await self.forward(headers, body)
        except (aiohttp.ClientError, OSError, TimeoutError) as error:
            reason = "timed out" if isinstance(error, TimeoutError) else _error_text(error)
            report.answer = 502
            report.forwarded = {"url": self.forward_to, "status": None, "error": reason}
            report.forwarded["note"] = f"app unreachable: {reason}"
            return f"voicehooks listen: {self.forward_to}: {reason}\n".encode(), "text/plain"
        report.answer = status
        report.forwarded = {"url": self.forward_to, "status": status, "ms": elapsed}
        report.forwarded["note"] = f"from the app, {elapsed} ms"
        return answer, content_type


def _text(value: object) -> str | None:
    """A payload field as shown: strings as they are, anything else as its JSON."""
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value)


def _error_text(error: BaseException) -> str:
    cause = getattr(error, "os_error", None) or error
    if isinstance(cause, ConnectionRefusedError):
        return "connection refused"
    return str(cause) or type(cause).__name__


def _iso(moment: float) -> str:
    return datetime.fromtimestamp(moment).astimezone().isoformat(timespec="milliseconds")


def _raw_request(method: str, raw_path: str, raw_headers: Any, body: bytes) -> bytes:
    head = f"{method} {raw_path} HTTP/1.1\r\n".encode("latin-1", "replace")
    for name, value in raw_headers:
        head += bytes(name) + b": " + bytes(value) + b"\r\n"
    return head + b"\r\n" + body


def parse_saved(raw: bytes) -> tuple[str, str, list[tuple[str, str]], bytes]:
    """A request saved by `--save`: (method, path, headers, body)."""
    head, separator, body = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if not separator or len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise ValueError("not a request saved by `voicehooks listen --save`")
    headers = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise ValueError(f"malformed header line {line[:60]!r}")
        headers.append((name.strip(), value.strip()))
    return parts[0], parts[1], headers, body


def build_app(listener: Listener) -> Any:
    from aiohttp import web

    async def handle(request: web.Request) -> web.StreamResponse:
        received = time.time()
        headers = [(name, value) for name, value in request.headers.items()]
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            report = Report(_iso(received), request.method, request.raw_path, 413)
            report.reason = f"not a delivery: the body is over {MAX_BODY // 2**20} MiB"
            listener.emit(report)
            return web.Response(status=413, text=report.reason + "\n")
        listener.save_request(
            _raw_request(request.method, request.raw_path, request.raw_headers, body)
        )
        report = listener.examine(
            method=request.method,
            host=request.host,
            raw_path=request.raw_path,
            headers=headers,
            body=body,
            received=received,
        )
        if report.event is None:
            listener.emit(report)
            return web.Response(status=report.answer, text=f"{report.reason}\n")
        if listener.delay:
            await asyncio.sleep(listener.delay)
        answer, content_type = b"", "text/plain"
        if listener.forward_to is not None:
            answer, content_type = await listener.answer_with_app(report, headers, body)
        elif report.verified is False:
            answer = f"{report.reason}\n".encode()
        transport = request.transport
        if transport is None or transport.is_closing():
            report.reason = (report.reason + "; " if report.reason else "") + (
                "the sender hung up before the answer (its timeout)"
            )
        listener.emit(report)
        if report.answer == 204:
            return web.Response(status=204)
        return web.Response(
            status=report.answer, body=answer, headers={"content-type": content_type}
        )

    async def close_session(_: web.Application) -> None:
        if listener.session is not None:
            await listener.session.close()

    app = web.Application(client_max_size=MAX_BODY)
    app.router.add_route("*", "/{tail:.*}", handle)
    app.on_cleanup.append(close_session)
    return app


def _replay(listener: Listener, path: Path) -> int:
    """Verify (and forward) a saved request once; 0 when it verified and the app took it."""
    try:
        method, raw_path, headers, body = parse_saved(path.read_bytes())
    except (OSError, ValueError) as error:
        typer.echo(f"voicehooks listen: cannot replay {path}: {error}", err=True)
        return 2
    host = next((value for name, value in headers if name.lower() == "host"), "127.0.0.1")
    # A replay is late by nature: the signatures are checked, not the age.
    report = listener.examine(
        method=method,
        host=host,
        raw_path=raw_path,
        headers=headers,
        body=body,
        received=time.time(),
        tolerance=None,
    )
    if report.event is not None and listener.forward_to is not None:

        async def forward() -> None:
            try:
                await listener.answer_with_app(report, headers, body)
            finally:
                if listener.session is not None:
                    await listener.session.close()

        asyncio.run(forward())
    listener.emit(report)
    return 0 if report.verified is not False and 200 <= report.answer < 300 else 1


def listen(
    port: Annotated[int, typer.Option("--port", metavar="PORT", help="Port to listen on.")] = 9000,
    host: Annotated[
        str, typer.Option("--host", metavar="HOST", help="Interface to listen on.")
    ] = "127.0.0.1",
    key: Annotated[
        list[str] | None,
        typer.Option(
            "--key",
            metavar="KEY",
            help="A subscription's signing key; repeat for several (a rotation). "
            "Every delivery is verified with them.",
        ),
    ] = None,
    forward_to: Annotated[
        str | None,
        typer.Option(
            "--forward-to",
            metavar="URL",
            help="Relay each delivery (exact body and headers) to your app at this URL "
            "and answer what the app answers.",
        ),
    ] = None,
    respond: Annotated[
        int | None,
        typer.Option(
            "--respond",
            metavar="STATUS",
            min=200,
            max=599,
            help="Answer deliveries with this status (to watch retries), "
            "instead of 204 (400 when a verification fails).",
        ),
    ] = None,
    delay: Annotated[
        float,
        typer.Option(
            "--delay",
            metavar="S",
            min=0,
            help="Seconds to wait before answering (to watch timeouts).",
        ),
    ] = 0.0,
    save: Annotated[
        Path | None,
        typer.Option(
            "--save",
            metavar="DIR",
            file_okay=False,
            help="Save each raw request as a file in this directory.",
        ),
    ] = None,
    replay: Annotated[
        Path | None,
        typer.Option(
            "--replay",
            metavar="FILE",
            exists=True,
            dir_okay=False,
            help="Verify a request saved with --save (its signatures, not its age) and "
            "relay it with --forward-to, then exit instead of listening.",
        ),
    ] = None,
    public_url: Annotated[
        str | None,
        typer.Option(
            "--public-url",
            metavar="URL",
            help="The scheme and host of the subscription's URL when it is not this "
            "listener's own (a tunnel, a proxy): Bird's signature covers the URL.",
        ),
    ] = None,
    json_lines: Annotated[
        bool, typer.Option("--json", help="One JSON object per line instead of text.")
    ] = False,
) -> None:
    """A local receiver for development: verifies and prints every delivery.

    One line per delivery: time, event, call id, call status, attempt
    (counted per webhook-id), seconds since webhook-timestamp, the answer,
    and verified ✓ or ✗ with the reason.
    """
    if forward_to is not None and respond is not None:
        typer.echo(
            "voicehooks listen: --forward-to answers what the app answers: "
            "--respond does not go with it",
            err=True,
        )
        raise typer.Exit(2)
    if save is not None:
        save.mkdir(parents=True, exist_ok=True)
    listener = Listener(
        keys=list(key or ()),
        forward_to=forward_to,
        respond=respond,
        delay=delay,
        save=save,
        json_lines=json_lines,
        public_url=public_url,
    )
    if replay is not None:
        raise typer.Exit(_replay(listener, replay))

    from aiohttp import web

    keys = f"verifying with {len(listener.keys)} key" + ("s" if len(listener.keys) > 1 else "")
    if not listener.keys:
        keys = "not verifying (no --key)"
    relay = f", relaying to {forward_to}" if forward_to else ""
    started = f"voicehooks listen: on http://{host}:{port}, {keys}{relay}; Ctrl-C stops"
    try:
        web.run_app(
            build_app(listener),
            host=host,
            port=port,
            print=lambda _: print(started, file=sys.stderr, flush=True),
            access_log=None,
            shutdown_timeout=5,
        )
    except OSError as error:
        typer.echo(f"voicehooks listen: cannot listen on {host}:{port}: {error.strerror}", err=True)
        raise typer.Exit(1) from None


listen.__doc__ = inspect.cleandoc(listen.__doc__ or "") + "\n\n" + VERIFYING_HELP
