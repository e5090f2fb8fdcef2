"""Queries on organizations, workspaces and access keys."""

import uuid

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from voicehooks.db.models import AccessKey, Organization, Workspace


class TenancyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def organization_by_name(self, name: str) -> Organization | None:
        return await self.session.scalar(select(Organization).where(Organization.name == name))

    async def workspace_by_name(self, organization_id: uuid.UUID, name: str) -> Workspace | None:
        return await self.session.scalar(
            select(Workspace).where(
                Workspace.organization_id == organization_id, Workspace.name == name
            )
        )

    async def workspace_in_organization(
        self, organization_id: uuid.UUID, workspace_id: uuid.UUID
    ) -> bool:
        found = await self.session.scalar(
            select(Workspace.id).where(
                Workspace.id == workspace_id, Workspace.organization_id == organization_id
            )
        )
        return found is not None

    async def access_key_by_hash(self, key_hash: bytes) -> AccessKey | None:
        return await self.session.scalar(select(AccessKey).where(AccessKey.key_hash == key_hash))

    async def add(self, row: Organization | Workspace | AccessKey) -> None:
        self.session.add(row)
        await self.session.flush()
