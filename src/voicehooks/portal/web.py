"""What every portal page shares: templates, security headers, the session, CSRF, error pages."""

import hmac
import json
from collections.abc import Callable, Coroutine, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import structlog
from fastapi import Depends, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, Response
from fastapi.routing import APIRoute
from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup, escape
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException as StarletteHTTPException

from voicehooks.config import Settings
from voicehooks.db.outage import DATABASE_ERRORS, RETRY_AFTER_SECONDS, is_outage, outages
from voicehooks.encryption import KeyRing
from voicehooks.errors import ProblemError
from voicehooks.portal.sessions import PortalScope, look_up
from voicehooks.tenancy.scope import WorkspaceScope
from voicehooks.web.dependencies import SessionDep

log = structlog.get_logger("voicehooks.portal")

COOKIE_NAME = "voicehooks_portal"
CSRF_FIELD = "csrf_token"
PACKAGE_DIR = Path(__file__).resolve().parent

templates = Environment(
    loader=FileSystemLoader(PACKAGE_DIR / "templates"),
    autoescape=select_autoescape(["html"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


def _utc_text(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def local_time(value: datetime | None, empty: str = "—") -> Markup:
    """A time the browser shows in its own zone (portal.js), with UTC on hover."""
    if value is None:
        return escape(empty)
    text = _utc_text(value)
    iso = value.astimezone(UTC).isoformat().replace("+00:00", "Z")
    return Markup('<time datetime="{0}" title="{1}">{1}</time>').format(iso, text)


def pretty_json(raw: str) -> str:
    try:
        return json.dumps(json.loads(raw), indent=2, ensure_ascii=False)
    except ValueError:
        return raw


templates.globals["local_time"] = local_time
templates.filters["pretty_json"] = pretty_json
# A global, so that imported macros (which see no page context) name the field too.
templates.globals["csrf_field"] = CSRF_FIELD


def content_security_policy(settings: Settings) -> str:
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        f"frame-ancestors {settings.portal_frame_ancestors}; form-action 'self'; "
        "base-uri 'none'; object-src 'none'"
    )


def secure(response: Response, settings: Settings, *, cacheable: bool = False) -> Response:
    response.headers["Content-Security-Policy"] = content_security_policy(settings)
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["X-Content-Type-Options"] = "nosniff"
    if not cacheable:
        response.headers["Cache-Control"] = "no-store"
    return response


def render(
    request: Request,
    template: str,
    *,
    scope: PortalScope | None = None,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    page = templates.get_template(template).render(request=request, scope=scope, **context)
    return HTMLResponse(page, status_code=status_code)


class PortalError(Exception):
    """Ends a portal request with an HTML page saying what happened."""

    def __init__(self, status: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.title = title
        self.message = message


def message_page(
    request: Request, status: int, title: str, message: str, scope: PortalScope | None = None
) -> HTMLResponse:
    return render(
        request, "message.html", scope=scope, status_code=status, title=title, message=message
    )


_PROBLEM_TITLES = {
    400: "Bad request",
    401: "Not signed in",
    403: "Not allowed",
    404: "Not found",
    409: "Not possible now",
    413: "Too large",
    422: "Not valid",
}


class PortalRoute(APIRoute):
    """A portal page: errors become HTML pages, and every answer carries the security headers."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            settings: Settings = request.app.state.settings
            try:
                response = await handler(request)
            except PortalError as exc:
                response = message_page(request, exc.status, exc.title, exc.message)
            except ProblemError as exc:
                title = _PROBLEM_TITLES.get(exc.status, "Error")
                response = message_page(request, exc.status, title, exc.detail)
            except RequestValidationError:
                response = message_page(
                    request, 422, "Not valid", "The address of this page is not valid."
                )
            except StarletteHTTPException as exc:
                title = _PROBLEM_TITLES.get(exc.status_code, "Error")
                response = message_page(request, exc.status_code, title, str(exc.detail))
            except DATABASE_ERRORS as exc:
                if not is_outage(exc):
                    raise
                outages.failed(exc)
                response = message_page(
                    request,
                    503,
                    "Try again shortly",
                    "The service cannot reach its database right now.",
                )
                response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
            return secure(
                response, settings, cacheable=request.url.path.startswith("/portal/static/")
            )

        return answer


def settings_of(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def key_ring_of(request: Request) -> KeyRing:
    key_ring: KeyRing = request.app.state.key_ring
    return key_ring


async def portal_scope(request: Request, session: SessionDep) -> PortalScope:
    cookie = request.cookies.get(COOKIE_NAME)
    if cookie:
        scope = await look_up(session, cookie)
        if scope is not None:
            return scope
    raise PortalError(
        401,
        "Not signed in",
        "This portal session has ended or was never opened. Ask for a new portal link.",
    )


ScopeDep = Annotated[PortalScope, Depends(portal_scope)]


def workspace_of(scope: PortalScope) -> WorkspaceScope:
    return WorkspaceScope(scope.organization_id, scope.workspace_id)


def _allowed_origins(request: Request, settings: Settings) -> set[str]:
    public = urlsplit(settings.public_url)
    origins = {f"{public.scheme}://{public.netloc}"}
    host = request.headers.get("host")
    if host:
        origins.add(f"{request.url.scheme}://{host}")
    return origins


def _same_origin(request: Request, settings: Settings) -> bool:
    """The request comes from a portal page.

    `Origin` must be the portal's own. A page sent with `Referrer-Policy: no-referrer` makes
    browsers send `Origin: null` with its form posts, so then the browser's own
    `Sec-Fetch-Site: same-origin` has to say it (a cross-site page cannot make it say so).
    """
    origin = request.headers.get("origin")
    if origin is not None and origin != "null":
        return origin in _allowed_origins(request, settings)
    return request.headers.get("sec-fetch-site") == "same-origin"


def refuse_read_only(scope: PortalScope) -> None:
    """403 for a session that may look but not change (also before a change's form is shown)."""
    if scope.read_only:
        raise PortalError(403, "Read-only", "This portal session can look but not change.")


async def change_form(
    request: Request, scope: PortalScope, *, allow_read_only: bool = False
) -> FormData:
    """The form of a change: refused (403) for read-only sessions, other origins, bad CSRF."""
    if not allow_read_only:
        refuse_read_only(scope)
    if not _same_origin(request, settings_of(request)):
        raise PortalError(403, "Not allowed", "This change did not come from a portal page.")
    try:
        form = await request.form(max_files=0, max_fields=200)
    except (StarletteHTTPException, ValueError, KeyError) as exc:
        raise PortalError(400, "Bad request", "The form could not be read.") from exc
    token = form.get(CSRF_FIELD)
    if not isinstance(token, str) or not hmac.compare_digest(
        token.encode(), scope.csrf_token.encode()
    ):
        raise PortalError(
            403, "Not allowed", "The form has expired or was not sent from this portal session."
        )
    return form


def text_field(form: Mapping[str, Any], name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""
