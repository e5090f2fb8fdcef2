"""Bodies of `POST …/portal-sessions` (SPEC §6)."""

import uuid
from datetime import datetime

from pydantic import ConfigDict, Field, StrictBool

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
    read_only: StrictBool = Field(default=False, description="The session can look but not change.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"subscriptionId": None, "expiresIn": 3600, "readOnly": False}]
        }
    )


class PortalSessionOut(CamelModel):
    url: str = Field(description="Works once; opens the portal in a browser.")
    expires_at: datetime

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "url": "http://127.0.0.1:8000/portal/enter?token=9bQ2kX0c0Yq8mJ1h3fV6wA",
                    "expiresAt": "2026-12-01T13:00:00Z",
                }
            ]
        }
    )
