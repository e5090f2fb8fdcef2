"""Request-scoped dependencies: settings, the database session (committed here, once), ids in
paths, and the 401 of a credential that is missing or wrong."""

import time
import uuid
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Path, Request
from sqlalchemy.ext.asyncio import AsyncSession

from voicehooks.config import Settings
from voicehooks.db.outage import outages
from voicehooks.encryption import KeyRing
from voicehooks.errors import NotFound, ProblemError


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    """The request's unit of work: committed after the endpoint returns, before the response."""
    began = time.monotonic()
    async with request.app.state.sessionmaker() as session:
        try:
            yield session
        except BaseException:
            await session.rollback()
            raise
        await session.commit()
        outages.succeeded(began)


async def get_key_ring(request: Request) -> KeyRing:
    key_ring: KeyRing = request.app.state.key_ring
    return key_ring


SettingsDep = Annotated[Settings, Depends(get_settings)]
KeyRingDep = Annotated[KeyRing, Depends(get_key_ring)]
SessionDep = Annotated[AsyncSession, Depends(_session, scope="function")]


class Unauthorized(ProblemError):
    """401, with the challenge of the scheme the operation wants (RFC 9110 §11.6.1)."""

    def __init__(self, detail: str, challenge: str) -> None:
        super().__init__(401, detail, headers={"WWW-Authenticate": challenge})


# Ids in paths are documented as UUIDs, and taken as any text: what is not one is a 404.
IdPath = Annotated[str, Path(json_schema_extra={"format": "uuid"})]


def parse_id(raw: str) -> uuid.UUID:
    """Ids in paths: anything that is not a UUID names nothing, so it is a 404."""
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound() from None
