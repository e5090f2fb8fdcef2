"""The portal's routes: the API that opens a session (SPEC §6), and the pages."""

from typing import Annotated

from fastapi import APIRouter, Body, status

from voicehooks.portal import sessions
from voicehooks.portal.pages import router as pages_router
from voicehooks.portal.schemas import PortalSessionCreate, PortalSessionOut
from voicehooks.subscriptions.service import get_subscription
from voicehooks.tenancy.authentication import ScopeDep
from voicehooks.web.dependencies import SessionDep, SettingsDep
from voicehooks.web.problems import BODY_RESPONSES, PROBLEM_RESPONSES
from voicehooks.web.routing import AuthenticateFirstRoute

api_router = APIRouter(
    prefix="/organizations/{organizationId}/workspaces/{workspaceId}",
    tags=["portal"],
    route_class=AuthenticateFirstRoute,
    responses=PROBLEM_RESPONSES,
)


@api_router.post(
    "/portal-sessions",
    status_code=status.HTTP_201_CREATED,
    response_model=PortalSessionOut,
    responses=BODY_RESPONSES,
    summary="A one-time link into the customer portal",
    operation_id="createPortalSession",
)
async def create_portal_session(
    scope: ScopeDep,
    session: SessionDep,
    settings: SettingsDep,
    body: Annotated[
        PortalSessionCreate,
        Body(
            openapi_examples={
                "workspace": {
                    "summary": "The whole workspace, for an hour",
                    "value": {"expiresIn": 3600},
                },
                "one subscription, read-only": {
                    "summary": "One subscription, look only",
                    "value": {
                        "subscriptionId": "3f7d2a4e-5b7c-4d1e-9a2b-6c8d0e1f2a3b",
                        "readOnly": True,
                    },
                },
            }
        ),
    ] = PortalSessionCreate(),  # no body: every default
) -> PortalSessionOut:
    """The link opens a browser session of this workspace (or of one subscription); it works
    once, until `expiresAt`, when the session ends too."""
    if body.subscription_id is not None:
        await get_subscription(session, scope, body.subscription_id)  # 404 when not here
    link = await sessions.issue(
        session,
        organization_id=scope.organization_id,
        workspace_id=scope.workspace_id,
        subscription_id=body.subscription_id,
        expires_in=body.expires_in,
        read_only=body.read_only,
        public_url=settings.public_url,
    )
    return PortalSessionOut(url=link.url, expires_at=link.expires_at)


router = APIRouter()
router.include_router(api_router)
router.include_router(pages_router)
