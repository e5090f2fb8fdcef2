"""The access-key dependency of the public API: who asks, and which of their workspaces.

The web-facing part of tenancy (it builds on FastAPI): endpoints take `ScopeDep`, services
take the plain `WorkspaceScope` it yields.
"""

from typing import Annotated

from fastapi import Depends, Security
from fastapi.security import APIKeyHeader

from voicehooks.errors import NotFound
from voicehooks.tenancy.scope import WorkspaceScope
from voicehooks.tenancy.service import organization_for_key, workspace_in_organization
from voicehooks.web.dependencies import IdPath, SessionDep, Unauthorized, parse_id

_access_key_header = APIKeyHeader(
    name="Authorization",
    scheme_name="AccessKey",
    description="`AccessKey <key>`, as printed by `voicehooks bootstrap`.",
    auto_error=False,
)

ACCESS_KEY_CHALLENGE = 'AccessKey realm="voicehooks"'


def missing_access_key() -> Unauthorized:
    return Unauthorized("send the header `Authorization: AccessKey <key>`", ACCESS_KEY_CHALLENGE)


def invalid_access_key() -> Unauthorized:
    return Unauthorized("this access key is not valid", ACCESS_KEY_CHALLENGE)


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
