"""Request-scoped dependencies: settings, the database session (committed here, once), auth."""

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request, Security
from fastapi.security import APIKeyHeader
from sqlalchemy.ext.asyncio import AsyncSession

from voicehooks.api.problems import NotFound, ProblemError
from voicehooks.config import Settings
from voicehooks.db.outage import outages
from voicehooks.encryption import KeyRing
from voicehooks.tenancy.service import organization_for_key, workspace_in_organization


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: committed after the endpoint returns, before the response."""
    async with request.app.state.sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()
        outages.succeeded()


async def get_key_ring(request: Request) -> KeyRing:
    key_ring: KeyRing = request.app.state.key_ring
    return key_ring


SettingsDep = Annotated[Settings, Depends(get_settings)]
KeyRingDep = Annotated[KeyRing, Depends(get_key_ring)]
SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]

_access_key_header = APIKeyHeader(
    name="Authorization",
    scheme_name="AccessKey",
    description="`AccessKey <key>`, as printed by `voicehooks bootstrap`.",
    auto_error=False,
)


class Unauthorized(ProblemError):
    """401, with the challenge of the scheme the operation wants (RFC 9110 §11.6.1)."""

    def __init__(self, detail: str, challenge: str) -> None:
        super().__init__(401, detail, headers={"WWW-Authenticate": challenge})


ACCESS_KEY_CHALLENGE = 'AccessKey realm="voicehooks"'


def missing_access_key() -> Unauthorized:
    return Unauthorized("send the header `Authorization: AccessKey <key>`", ACCESS_KEY_CHALLENGE)


def invalid_access_key() -> Unauthorized:
    return Unauthorized("this access key is not valid", ACCESS_KEY_CHALLENGE)


# Ids in paths are documented as UUIDs, and taken as any text: what is not one is a 404.
IdPath = Annotated[str, Path(json_schema_extra={"format": "uuid"})]


def parse_id(raw: str) -> uuid.UUID:
    """Ids in paths: anything that is not a UUID names nothing, so it is a 404."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound() from None


@dataclass(frozen=True)
class WorkspaceScope:
    organization_id: uuid.UUID
    workspace_id: uuid.UUID


async def workspace_scope(
    organizationId: IdPath,
    workspaceId: IdPath,
    session: SessionDep,
    authorization: Annotated[str | None, Security(_access_key_header)] = None,
) -> WorkspaceScope:
    scheme, _, key = (authorization or "").partition(" ")
    if scheme.lower() != "accesskey" or not key.strip():
        raise missing_access_key()
    organization_id = await organization_for_key(session, key.strip())
    if organization_id is None:
        raise invalid_access_key()
    if parse_id(organizationId) != organization_id:
        raise NotFound()
    workspace_id = parse_id(workspaceId)
    if not await workspace_in_organization(session, organization_id, workspace_id):
        raise NotFound()
    return WorkspaceScope(organization_id, workspace_id)


ScopeDep = Annotated[WorkspaceScope, Depends(workspace_scope)]
