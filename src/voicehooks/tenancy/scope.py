"""Which workspace of which organization a request or command acts on: what services take."""

import uuid
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkspaceScope:
    organization_id: uuid.UUID
    workspace_id: uuid.UUID
