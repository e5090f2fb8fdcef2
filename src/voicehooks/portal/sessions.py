"""Portal sessions (SPEC §6): one-time links exchanged for a browser session.

A link's token and a session's cookie each carry 256 random bits; only their SHA-256 digests
are stored, so a dump of the database opens nothing. A link works once and only until its
expiry, which is also when the session it opens ends. The CSRF token of a session is derived
from its cookie (an HMAC), so it needs no storage and dies with the session.
"""

import base64
import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from voicehooks.db.engine import create_engine, create_sessionmaker
from voicehooks.db.models import PortalSession, Workspace
from voicehooks.errors import NotFound
from voicehooks.tenancy.repository import TenancyRepository
from voicehooks.tenancy.scope import WorkspaceScope

ENTER_PATH = "/portal/enter"
DEFAULT_EXPIRES_IN = 3600
MIN_EXPIRES_IN = 60
MAX_EXPIRES_IN = 86400
# Expired sessions removed by each issue of a new link (a bounded amount of work).
_PURGE_BATCH = 100


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8", "surrogatepass")).digest()


def csrf_token_for(cookie: str) -> str:
    """The session's CSRF token: only the holder of the cookie can know it."""
    mac = hmac.digest(cookie.encode("utf-8", "surrogatepass"), b"voicehooks portal csrf", "sha256")
    return base64.urlsafe_b64encode(mac).decode().rstrip("=")


@dataclass(frozen=True)
class PortalLink:
    url: str
    expires_at: datetime


@dataclass(frozen=True)
class EnteredSession:
    cookie: str
    expires_at: datetime


@dataclass(frozen=True)
class PortalScope:
    """What one portal session may see and do."""

    session_id: uuid.UUID
    organization_id: uuid.UUID
    workspace_id: uuid.UUID
    workspace_name: str
    subscription_id: uuid.UUID | None
    read_only: bool
    expires_at: datetime
    csrf_token: str

    def sees(self, subscription_id: uuid.UUID) -> bool:
        """Within the session's reach (a subscription-scoped session sees only its own)."""
        return self.subscription_id is None or self.subscription_id == subscription_id


async def issue(
    session: AsyncSession,
    *,
    organization_id: uuid.UUID,
    workspace_id: uuid.UUID,
    subscription_id: uuid.UUID | None,
    expires_in: int,
    read_only: bool,
    public_url: str,
) -> PortalLink:
    """A new one-time link; the caller has checked the workspace and subscription."""
    await session.execute(
        delete(PortalSession).where(
            PortalSession.id.in_(
                select(PortalSession.id)
                .where(PortalSession.expires_at < datetime.now(UTC))
                .limit(_PURGE_BATCH)
                .scalar_subquery()
            )
        )
    )
    token = secrets.token_urlsafe(32)
    expires_at = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=expires_in)
    session.add(
        PortalSession(
            id=uuid.uuid4(),
            link_hash=_digest(token),
            organization_id=organization_id,
            workspace_id=workspace_id,
            subscription_id=subscription_id,
            read_only=read_only,
            expires_at=expires_at,
        )
    )
    await session.flush()
    return PortalLink(f"{public_url}{ENTER_PATH}?token={token}", expires_at)


async def enter(session: AsyncSession, token: str) -> EnteredSession | None:
    """Exchange a link's token for a session cookie; None when used, expired or unknown."""
    cookie = secrets.token_urlsafe(32)
    expires_at = await session.scalar(
        update(PortalSession)
        .where(
            PortalSession.link_hash == _digest(token),
            PortalSession.entered_at.is_(None),
            PortalSession.expires_at > datetime.now(UTC),
        )
        .values(entered_at=datetime.now(UTC), cookie_hash=_digest(cookie))
        .returning(PortalSession.expires_at)
    )
    if expires_at is None:
        return None
    return EnteredSession(cookie, expires_at)


async def look_up(session: AsyncSession, cookie: str) -> PortalScope | None:
    """The live session that a cookie opens, or None."""
    row = (
        await session.execute(
            select(PortalSession, Workspace.name)
            .join(Workspace, Workspace.id == PortalSession.workspace_id)
            .where(
                PortalSession.cookie_hash == _digest(cookie),
                PortalSession.expires_at > datetime.now(UTC),
            )
        )
    ).first()
    if row is None:
        return None
    found, workspace_name = row
    return PortalScope(
        session_id=found.id,
        organization_id=found.organization_id,
        workspace_id=found.workspace_id,
        workspace_name=workspace_name,
        subscription_id=found.subscription_id,
        read_only=found.read_only,
        expires_at=found.expires_at,
        csrf_token=csrf_token_for(cookie),
    )


async def end(session: AsyncSession, session_id: uuid.UUID) -> None:
    await session.execute(delete(PortalSession).where(PortalSession.id == session_id))


class LinkRefused(Exception):
    """Why `voicehooks portal-link` cannot issue the link asked for."""


async def issue_link_database(
    database_url: str,
    *,
    organization_name: str,
    workspace_name: str,
    subscription_id: uuid.UUID | None,
    expires_in: int,
    read_only: bool,
    public_url: str,
) -> PortalLink:
    """issue() for an operator (the CLI): the workspace named by its and its org's names."""
    from voicehooks.subscriptions.service import get_subscription

    engine = create_engine(database_url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            tenancy = TenancyRepository(session)
            organization = await tenancy.organization_by_name(organization_name)
            if organization is None:
                raise LinkRefused(f"no organization named {organization_name!r}")
            workspace = await tenancy.workspace_by_name(organization.id, workspace_name)
            if workspace is None:
                raise LinkRefused(f"no workspace named {workspace_name!r} in {organization_name!r}")
            if subscription_id is not None:
                try:
                    await get_subscription(
                        session, WorkspaceScope(organization.id, workspace.id), subscription_id
                    )
                except NotFound:
                    raise LinkRefused(f"no subscription {subscription_id} there") from None
            return await issue(
                session,
                organization_id=organization.id,
                workspace_id=workspace.id,
                subscription_id=subscription_id,
                expires_in=expires_in,
                read_only=read_only,
                public_url=public_url,
            )
    finally:
        await engine.dispose()
