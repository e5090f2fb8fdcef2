"""Organizations, workspaces and the access keys that open them."""

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from voicehooks.db.engine import create_engine, create_sessionmaker
from voicehooks.db.models import AccessKey, Organization, Workspace
from voicehooks.tenancy.repository import TenancyRepository

ACCESS_KEY_PREFIX = "vhk_"


def hash_access_key(key: str) -> bytes:
    # Keys carry 256 random bits, so a fast hash is enough; the raw key is never stored.
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).digest()


@dataclass(frozen=True)
class BootstrapResult:
    organization_id: uuid.UUID
    workspace_id: uuid.UUID
    access_key: str


async def bootstrap(
    session: AsyncSession, organization_name: str, workspace_name: str
) -> BootstrapResult:
    """Find or create the organization and workspace; always issue a new access key."""
    repository = TenancyRepository(session)
    organization = await repository.organization_by_name(organization_name)
    if organization is None:
        organization = Organization(id=uuid.uuid4(), name=organization_name)
        await repository.add(organization)
    workspace = await repository.workspace_by_name(organization.id, workspace_name)
    if workspace is None:
        workspace = Workspace(id=uuid.uuid4(), organization_id=organization.id, name=workspace_name)
        await repository.add(workspace)
    key = ACCESS_KEY_PREFIX + secrets.token_urlsafe(32)
    await repository.add(
        AccessKey(id=uuid.uuid4(), organization_id=organization.id, key_hash=hash_access_key(key))
    )
    return BootstrapResult(organization.id, workspace.id, key)


async def bootstrap_database(
    database_url: str, organization_name: str, workspace_name: str
) -> BootstrapResult:
    """bootstrap() in a transaction of its own, outside any request (CLI, tests)."""
    engine = create_engine(database_url, pool_size=1)
    try:
        async with create_sessionmaker(engine)() as session, session.begin():
            return await bootstrap(session, organization_name, workspace_name)
    finally:
        await engine.dispose()


async def organization_for_key(session: AsyncSession, key: str) -> uuid.UUID | None:
    expected = hash_access_key(key)
    found = await TenancyRepository(session).access_key_by_hash(expected)
    if found is None or not hmac.compare_digest(found.key_hash, expected):
        return None
    return found.organization_id


async def workspace_in_organization(
    session: AsyncSession, organization_id: uuid.UUID, workspace_id: uuid.UUID
) -> bool:
    return await TenancyRepository(session).workspace_in_organization(organization_id, workspace_id)
