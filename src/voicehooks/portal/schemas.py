"""Bodies of `POST …/portal-sessions` (SPEC §6)."""

import uuid
from datetime import datetime

from pydantic import Field

from voicehooks.portal.sessions import DEFAULT_EXPIRES_IN, MAX_EXPIRES_IN, MIN_EXPIRES_IN
from voicehooks.subscriptions.schemas import CamelModel


class PortalSessionCreate(CamelModel):
    subscription_id: uuid.UUID | None = Field(
        default=None, description="Only this subscription is seen (404 when not yours)."
    )
    expires_in: int = Field(
        default=DEFAULT_EXPIRES_IN,
        ge=MIN_EXPIRES_IN,
        le=MAX_EXPIRES_IN,
        description="Seconds until the link and its session end.",
    )
    read_only: bool = Field(default=False, description="The session can look but not change.")


class PortalSessionOut(CamelModel):
    url: str = Field(description="Works once; opens the portal in a browser.")
    expires_at: datetime
