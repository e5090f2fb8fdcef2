"""The portal's pages (SPEC §6): server-rendered HTML; every change is a form POST with CSRF.

Reads and changes of subscriptions and deliveries go through the domain services, as the API
does; the portal's own reads (overview, delivery search, a delivery's attempts) through
`PortalRepository`.
"""

import contextlib
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from pydantic import ValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.datastructures import FormData

import voicehooks
from voicehooks.deliveries import service as deliveries
from voicehooks.errors import Conflict, InvalidInput
from voicehooks.portal import charts, sessions
from voicehooks.portal.catalog import EVENT_CATALOG
from voicehooks.portal.forms import ALL_STATUSES, SubscriptionForm, filters_in_words
from voicehooks.portal.repository import (
    BACKLOG_COUNT_CAP,
    STATES,
    AttemptRow,
    DeliveryDetail,
    DeliveryFilter,
    PortalRepository,
    decode_cursor,
    encode_cursor,
)
from voicehooks.portal.sessions import PortalScope
from voicehooks.portal.static import static_response
from voicehooks.portal.web import (
    COOKIE_NAME,
    PortalError,
    PortalRoute,
    ScopeDep,
    change_form,
    key_ring_of,
    message_page,
    refuse_read_only,
    render,
    settings_of,
    text_field,
    workspace_of,
)
from voicehooks.subscriptions import service as subscriptions
from voicehooks.subscriptions.schemas import SubscriptionOut, SubscriptionUpdate
from voicehooks.voice import CALL_STATUSES, EVENTS
from voicehooks.web.dependencies import SessionDep, parse_id

router = APIRouter(prefix="/portal", route_class=PortalRoute, include_in_schema=False)

PAGE_SIZE = 25
SUBSCRIPTIONS_PAGE_SIZE = 20
RECENT_ON_SUBSCRIPTION = 5
MAX_SEARCH_LENGTH = 255
# The events that report each status (the form notes statuses of one event only).
REPORTING_EVENTS = {
    status: [event for event in EVENTS if status in CALL_STATUSES[event]] for status in ALL_STATUSES
}
NOTICES = {
    "saved": "Saved.",
    "enabled": "The subscription is active again.",
    "disabled": "The subscription is inactive: nothing is sent to it until you enable it.",
    "rotated": "The signing key was replaced. The old key keeps signing for a while.",
    "deleted": "The subscription was deleted.",
    "retried": "One more attempt is on its way.",
    "recovered": "Failed deliveries were queued again.",
}


def _see_other(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _notice(request: Request) -> str | None:
    return NOTICES.get(request.query_params.get("notice", ""))


def _not_found() -> PortalError:
    return PortalError(404, "Not found", "There is nothing here, or it is not yours to see.")


async def _subscription(session: AsyncSession, scope: PortalScope, raw_id: str) -> SubscriptionOut:
    subscription_id = parse_id(raw_id)
    if not scope.sees(subscription_id):
        raise _not_found()
    found = await subscriptions.get_subscription(session, workspace_of(scope), subscription_id)
    return subscriptions.to_out(found)


async def _page_subscription(
    subscription_id: str, scope: ScopeDep, session: SessionDep
) -> SubscriptionOut:
    return await _subscription(session, scope, subscription_id)


# The subscription a page is about, 404 when this session does not see it.
PageSubscription = Annotated[SubscriptionOut, Depends(_page_subscription)]


@dataclass(frozen=True)
class _Change:
    form: FormData
    subscription: SubscriptionOut


async def _subscription_change(
    request: Request, subscription_id: str, scope: ScopeDep, session: SessionDep
) -> _Change:
    form = await change_form(request, scope)  # refused before anything is looked up
    return _Change(form, await _subscription(session, scope, subscription_id))


# A change of the subscription a page is about: its checked form, then the subscription.
SubscriptionChange = Annotated[_Change, Depends(_subscription_change)]


def _may_create(scope: PortalScope) -> None:
    if scope.subscription_id is not None:
        raise PortalError(403, "Not allowed", "This portal session sees one subscription only.")


def _parse_time(value: str, offset: str, field: str) -> datetime:
    """A time from a form: RFC 3339, or a browser's local time with its offset in minutes."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise PortalError(
            422, "Not valid", f"{field}: not a date and time (e.g. 2026-11-24T09:30)"
        ) from None
    if parsed.tzinfo is None:
        minutes = 0
        with contextlib.suppress(ValueError):
            minutes = int(offset or 0)
        if abs(minutes) >= 24 * 60:
            minutes = 0
        # A browser's getTimezoneOffset() is UTC minus local time, in minutes.
        parsed = parsed.replace(tzinfo=timezone(timedelta(minutes=-minutes)))
    try:
        return parsed.astimezone(UTC)
    except OverflowError:
        raise PortalError(422, "Not valid", f"{field}: out of range") from None


# -- entering and leaving -----------------------------------------------------------------------


async def _update(
    request: Request,
    scope: PortalScope,
    session: AsyncSession,
    subscription_id: uuid.UUID,
    body: SubscriptionUpdate,
) -> SubscriptionOut:
    """A change through the subscriptions service, with the same rules as the API."""
    return await subscriptions.update_subscription(
        session,
        workspace_of(scope),
        subscription_id,
        body,
        settings_of(request),
        key_ring_of(request),
    )


@router.get("")
async def portal_root() -> Response:
    return _see_other("/portal/")


@router.get("/enter")
async def enter(request: Request, session: SessionDep) -> Response:
    token = request.query_params.get("token", "")
    entered = await sessions.enter(session, token) if 0 < len(token) <= 200 else None
    if entered is None:
        return message_page(
            request,
            401,
            "This link does not open the portal",
            "It was used already, it has expired, or it is not a portal link. "
            "Portal links work once: ask for a new one.",
        )
    settings = settings_of(request)
    response = _see_other("/portal/")
    lifetime = max(int((entered.expires_at - datetime.now(UTC)).total_seconds()), 0)
    response.set_cookie(
        COOKIE_NAME,
        entered.cookie,
        max_age=lifetime,
        expires=entered.expires_at,
        path="/portal",
        secure=settings.public_url.startswith("https://"),
        httponly=True,
        samesite="strict",
    )
    return response


@router.post("/sign-out")
async def sign_out(request: Request, scope: ScopeDep, session: SessionDep) -> Response:
    # Signing out changes nothing of the workspace: read-only sessions may do it too.
    await change_form(request, scope, allow_read_only=True)
    await sessions.end(session, scope.session_id)
    response = message_page(
        request, 200, "Signed out", "This portal session has ended. Use a new link to come back."
    )
    response.delete_cookie(COOKIE_NAME, path="/portal", httponly=True, samesite="strict")
    return response


# -- overview -----------------------------------------------------------------------------------


@router.get("/")
async def overview(request: Request, scope: ScopeDep, session: SessionDep) -> Response:
    data = await PortalRepository(session).overview(
        scope.workspace_id, scope.subscription_id, datetime.now(UTC)
    )
    finished = data.totals["succeeded"] + data.totals["failed"]
    return render(
        request,
        "overview.html",
        scope=scope,
        page="overview",
        overview=data,
        success_rate=(data.totals["succeeded"] / finished) if finished else None,
        deliveries_chart=charts.deliveries_chart(data.hours),
        latency_chart=charts.latency_chart(data.hours),
        backlog_cap=BACKLOG_COUNT_CAP,
    )


# -- subscriptions ------------------------------------------------------------------------------


@router.get("/subscriptions")
async def subscription_list(request: Request, scope: ScopeDep, session: SessionDep) -> Response:
    next_token = None
    if scope.subscription_id is not None:
        rows = [await _subscription(session, scope, str(scope.subscription_id))]
    else:
        page = await subscriptions.list_subscriptions(
            session,
            workspace_of(scope),
            event=None,
            status=None,
            page_token=request.query_params.get("page") or None,
            limit=SUBSCRIPTIONS_PAGE_SIZE,
        )
        rows, next_token = page.results, page.next_page_token
    shares = await PortalRepository(session).finished_shares(
        [row.id for row in rows], datetime.now(UTC)
    )
    return render(
        request,
        "subscriptions.html",
        scope=scope,
        page="subscriptions",
        subscriptions=rows,
        shares=shares,
        next_token=next_token,
        first_page=not request.query_params.get("page"),
        filters_in_words=filters_in_words,
        notice=_notice(request),
    )


def _form_page(
    request: Request,
    scope: PortalScope,
    form: SubscriptionForm,
    *,
    subscription: SubscriptionOut | None = None,
    status_code: int = 200,
) -> Response:
    return render(
        request,
        "subscription_form.html",
        scope=scope,
        page="subscriptions",
        form=form,
        subscription=subscription,
        events=EVENTS,
        statuses=ALL_STATUSES if subscription is None else CALL_STATUSES[subscription.event],
        reporting_events=REPORTING_EVENTS,
        status_code=status_code,
    )


@router.get("/subscriptions/new")
async def new_subscription(request: Request, scope: ScopeDep) -> Response:
    _may_create(scope)
    refuse_read_only(scope)
    return _form_page(request, scope, SubscriptionForm())


@router.post("/subscriptions")
async def create_subscription(request: Request, scope: ScopeDep, session: SessionDep) -> Response:
    form = await change_form(request, scope)
    _may_create(scope)
    entered = SubscriptionForm.read(form)
    body = entered.create_body()
    created = None
    if body is not None:
        try:
            created = await subscriptions.create_subscription(
                session, workspace_of(scope), body, settings_of(request), key_ring_of(request)
            )
        except InvalidInput as refused:
            entered.add_errors(refused.errors or [])
            if not refused.errors:
                entered.errors.setdefault("", []).append(refused.detail)
        except Conflict as refused:
            entered.errors.setdefault("", []).append(refused.detail)
    if created is None:
        await session.rollback()
        return _form_page(request, scope, entered, status_code=422)
    if body is not None and body.signing_key is None:
        return _verify_page(request, scope, created, revealed_key=created.signing_key, fresh=True)
    return _see_other(f"/portal/subscriptions/{created.id}?notice=saved")


@router.get("/subscriptions/{subscription_id}")
async def subscription_page(
    request: Request, subscription: PageSubscription, scope: ScopeDep, session: SessionDep
) -> Response:
    return await _subscription_page(request, scope, session, subscription)


async def _subscription_page(
    request: Request,
    scope: PortalScope,
    session: AsyncSession,
    subscription: SubscriptionOut,
    *,
    errors: dict[str, list[str]] | None = None,
    status_code: int = 200,
) -> Response:
    repository = PortalRepository(session)
    recent = await repository.deliveries_page(
        scope.workspace_id,
        DeliveryFilter(subscription_id=subscription.id),
        cursor=None,
        limit=RECENT_ON_SUBSCRIPTION,
    )
    shares = await repository.finished_shares([subscription.id], datetime.now(UTC))
    notice = _notice(request)
    if request.query_params.get("notice") == "recovered":
        count = request.query_params.get("count", "")
        if count.isdigit():
            notice = f"{int(count):,} failed deliveries were queued again."
    return render(
        request,
        "subscription.html",
        scope=scope,
        page="subscriptions",
        subscription=subscription,
        recent=recent,
        share=shares.get(subscription.id),
        filters_in_words=filters_in_words,
        notice=notice,
        errors=errors or {},
        status_code=status_code,
    )


@router.get("/subscriptions/{subscription_id}/edit")
async def edit_subscription(
    request: Request, subscription: PageSubscription, scope: ScopeDep, session: SessionDep
) -> Response:
    refuse_read_only(scope)
    form = SubscriptionForm(
        event=subscription.event,
        url=subscription.url,
        channel_id=next((f.value for f in subscription.event_filters if f.key == "channelId"), ""),
        statuses=[f.value for f in subscription.event_filters if f.key == "status"],
    )
    return _form_page(request, scope, form, subscription=subscription)


@router.post("/subscriptions/{subscription_id}/edit")
async def update_subscription(
    request: Request, change: SubscriptionChange, scope: ScopeDep, session: SessionDep
) -> Response:
    form, subscription = change.form, change.subscription
    entered = SubscriptionForm.read(form)
    entered.event = subscription.event
    body = entered.update_body(subscription.url)
    if body is not None:
        try:
            await _update(request, scope, session, subscription.id, body)
        except InvalidInput as refused:
            entered.add_errors(refused.errors or [])
            if not refused.errors:
                entered.errors.setdefault("", []).append(refused.detail)
        except Conflict as refused:
            entered.errors.setdefault("", []).append(refused.detail)
    if body is None or entered.errors:
        await session.rollback()
        return _form_page(request, scope, entered, subscription=subscription, status_code=422)
    return _see_other(f"/portal/subscriptions/{subscription.id}?notice=saved")


@router.post("/subscriptions/{subscription_id}/status")
async def set_status(
    request: Request, change: SubscriptionChange, scope: ScopeDep, session: SessionDep
) -> Response:
    form, subscription = change.form, change.subscription
    wanted = text_field(form, "status")
    if wanted not in ("active", "inactive"):
        raise PortalError(422, "Not valid", "status: must be active or inactive")
    wanted_status = SubscriptionUpdate(status=wanted)  # type: ignore[arg-type]
    await _update(request, scope, session, subscription.id, wanted_status)
    notice = "enabled" if wanted == "active" else "disabled"
    return _see_other(f"/portal/subscriptions/{subscription.id}?notice={notice}")


@router.post("/subscriptions/{subscription_id}/rotate-key")
async def rotate_key(
    request: Request, change: SubscriptionChange, scope: ScopeDep, session: SessionDep
) -> Response:
    form, subscription = change.form, change.subscription
    chosen = text_field(form, "signing_key")
    new_key = chosen or secrets.token_urlsafe(32)
    try:
        body = SubscriptionUpdate.model_validate({"signingKey": new_key})
    except ValidationError as exc:
        messages = [error["msg"] for error in exc.errors()]
        return await _subscription_page(
            request, scope, session, subscription, errors={"signing_key": messages}, status_code=422
        )
    updated = await _update(request, scope, session, subscription.id, body)
    if chosen:
        return _see_other(f"/portal/subscriptions/{subscription.id}?notice=rotated")
    return _verify_page(request, scope, updated, revealed_key=new_key, rotated=True)


@router.post("/subscriptions/{subscription_id}/test")
async def send_test(
    request: Request, change: SubscriptionChange, scope: ScopeDep, session: SessionDep
) -> Response:
    subscription = change.subscription
    sent = await deliveries.send_test_event(session, workspace_of(scope), subscription.id)
    return _see_other(f"/portal/deliveries/{sent.delivery_id}")


@router.post("/subscriptions/{subscription_id}/recover")
async def recover(
    request: Request, change: SubscriptionChange, scope: ScopeDep, session: SessionDep
) -> Response:
    form, subscription = change.form, change.subscription
    raw = text_field(form, "since")
    if not raw:
        raise PortalError(422, "Not valid", "since: choose the time to recover from")
    since = _parse_time(raw, text_field(form, "since_offset"), "since")
    done = await deliveries.recover_failed(session, workspace_of(scope), subscription.id, since)
    await PortalRepository(session).forget_hours(subscription.id, since)
    return _see_other(
        f"/portal/subscriptions/{subscription.id}?notice=recovered&count={done.requeued}"
    )


@router.get("/subscriptions/{subscription_id}/delete")
async def confirm_delete(
    request: Request, subscription: PageSubscription, scope: ScopeDep, session: SessionDep
) -> Response:
    refuse_read_only(scope)
    return render(
        request,
        "confirm_delete.html",
        scope=scope,
        page="subscriptions",
        subscription=subscription,
    )


@router.post("/subscriptions/{subscription_id}/delete")
async def delete_subscription(
    request: Request, change: SubscriptionChange, scope: ScopeDep, session: SessionDep
) -> Response:
    subscription = change.subscription
    await subscriptions.delete_subscription(session, workspace_of(scope), subscription.id)
    return _see_other("/portal/subscriptions?notice=deleted")


def _verify_page(
    request: Request,
    scope: PortalScope,
    subscription: SubscriptionOut,
    *,
    revealed_key: str | None = None,
    fresh: bool = False,
    rotated: bool = False,
) -> Response:
    return render(
        request,
        "verify.html",
        scope=scope,
        page="subscriptions",
        subscription=subscription,
        revealed_key=revealed_key,
        key_text=revealed_key or "YOUR_SIGNING_KEY",
        fresh=fresh,
        rotated=rotated,
    )


@router.get("/subscriptions/{subscription_id}/verify")
async def verify(
    request: Request, subscription: PageSubscription, scope: ScopeDep, session: SessionDep
) -> Response:
    return _verify_page(request, scope, subscription)


# -- deliveries ---------------------------------------------------------------------------------


def _delivery_filter(request: Request, scope: PortalScope) -> tuple[DeliveryFilter, list[str]]:
    """The list's filters from the query, with what is wrong in them."""
    query = request.query_params
    errors: list[str] = []
    subscription_id = scope.subscription_id
    raw_subscription = query.get("subscription", "")
    if raw_subscription:
        try:
            chosen = uuid.UUID(raw_subscription)
        except ValueError:
            chosen = None
            errors.append("subscription: not a subscription of this workspace")
        if chosen is not None:
            if not scope.sees(chosen):
                raise _not_found()
            subscription_id = chosen
    state = query.get("state") or None
    if state is not None and state not in STATES:
        errors.append(f"state: one of {', '.join(STATES)}")
        state = None
    times: dict[str, datetime | None] = {"since": None, "until": None}
    for name in times:
        raw = query.get(name, "")
        if raw:
            try:
                times[name] = _parse_time(raw, query.get(f"{name}_offset", ""), name)
            except PortalError as refused:
                errors.append(refused.message)
    search = query.get("q", "").strip()
    if len(search) > MAX_SEARCH_LENGTH:
        errors.append(f"search: at most {MAX_SEARCH_LENGTH} characters")
        search = ""
    if "\x00" in search:
        errors.append("search: must not contain NUL characters")
        search = ""
    return (
        DeliveryFilter(subscription_id, state, times["since"], times["until"], search or None),
        errors,
    )


@router.get("/deliveries")
async def delivery_list(request: Request, scope: ScopeDep, session: SessionDep) -> Response:
    where, errors = _delivery_filter(request, scope)
    if where.subscription_id is not None:
        await _subscription(session, scope, str(where.subscription_id))  # 404 when not here
    cursor = None
    after = request.query_params.get("after", "")
    if after:
        try:
            cursor = decode_cursor(after)
        except ValueError:
            errors.append("page: not a page of this list")
    repository = PortalRepository(session)
    rows = []
    if not errors:
        rows = await repository.deliveries_page(
            scope.workspace_id, where, cursor=cursor, limit=PAGE_SIZE + 1
        )
    more = len(rows) > PAGE_SIZE
    rows = rows[:PAGE_SIZE]
    kept = {
        key: value
        for key, value in request.query_params.items()
        if key != "after" and value and len(value) <= MAX_SEARCH_LENGTH
    }
    return render(
        request,
        "deliveries.html",
        scope=scope,
        page="deliveries",
        deliveries=rows,
        where=where,
        query=request.query_params,
        kept=kept,
        next_cursor=encode_cursor(rows[-1].cursor) if more else None,
        paged=cursor is not None,
        errors=errors,
        states=STATES,
        choices=await repository.subscription_choices(scope.workspace_id, scope.subscription_id),
        filtered=any((where.state, where.since, where.until, where.search))
        or where.subscription_id not in (None, scope.subscription_id),
        status_code=422 if errors else 200,
    )


async def _delivery(session: AsyncSession, scope: PortalScope, raw_id: str) -> DeliveryDetail:
    found = await PortalRepository(session).delivery(scope.workspace_id, parse_id(raw_id))
    if found is None or not scope.sees(found.delivery.subscription_id):
        raise _not_found()
    return found


def _request_headers(detail: DeliveryDetail, attempt: AttemptRow) -> list[tuple[str, str]]:
    """The headers an attempt was sent with (SPEC §4). Attempts recorded before the headers
    were kept show what they were made of instead of the signatures."""
    if attempt.request_headers is not None:
        return sorted(attempt.request_headers.items())
    stamp = str(int(attempt.created_at.timestamp()))
    delivery_id = str(detail.delivery.id)
    return [
        ("content-type", "application/json"),
        ("user-agent", f"voicehooks/{voicehooks.__version__}"),
        ("messagebird-request-id", delivery_id),
        ("messagebird-request-timestamp", stamp),
        ("messagebird-signature", "base64 HMAC-SHA256 with the signing key (not stored)"),
        ("webhook-id", delivery_id),
        ("webhook-timestamp", stamp),
        ("webhook-signature", "v1,… one entry per signing key in use (not stored)"),
    ]


async def _attempts_context(session: AsyncSession, detail: DeliveryDetail) -> dict[str, Any]:
    attempts = await PortalRepository(session).attempts(detail.delivery.id)
    return {
        "detail": detail,
        "attempts": attempts,
        "headers_of": lambda attempt: _request_headers(detail, attempt),
    }


@router.get("/deliveries/{delivery_id}")
async def delivery_page(
    request: Request, delivery_id: str, scope: ScopeDep, session: SessionDep
) -> Response:
    detail = await _delivery(session, scope, delivery_id)
    return render(
        request,
        "delivery.html",
        scope=scope,
        page="deliveries",
        notice=_notice(request),
        **await _attempts_context(session, detail),
    )


@router.get("/deliveries/{delivery_id}/attempts")
async def delivery_attempts(
    request: Request, delivery_id: str, scope: ScopeDep, session: SessionDep
) -> Response:
    """The delivery's state and attempts alone: what the page refreshes while it is pending."""
    detail = await _delivery(session, scope, delivery_id)
    return render(request, "attempts.html", scope=scope, **await _attempts_context(session, detail))


@router.post("/deliveries/{delivery_id}/retry")
async def retry(
    request: Request, delivery_id: str, scope: ScopeDep, session: SessionDep
) -> Response:
    await change_form(request, scope)
    detail = await _delivery(session, scope, delivery_id)
    await deliveries.retry_delivery(
        session, workspace_of(scope), detail.delivery.subscription_id, detail.delivery.id
    )
    created_at = detail.delivery.created_at
    await PortalRepository(session).forget_hours(
        detail.delivery.subscription_id, created_at, created_at
    )
    return _see_other(f"/portal/deliveries/{detail.delivery.id}?notice=retried")


# -- reference pages ----------------------------------------------------------------------------


@router.get("/events")
async def event_catalog(request: Request, scope: ScopeDep) -> Response:
    return render(request, "events.html", scope=scope, page="events", catalog=EVENT_CATALOG)


@router.get("/static/{name}")
async def static(name: str) -> Response:
    return static_response(name)


@router.api_route(
    "/{rest:path}", methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
)
async def unknown(rest: str) -> Response:
    raise _not_found()
