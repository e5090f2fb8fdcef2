"""`voicehooks portal-link`: a portal link for an operator, printed alone on stdout."""

import asyncio
import uuid

import typer

from voicehooks.config import Settings
from voicehooks.portal.sessions import LinkRefused, issue_link_database


def print_portal_link(
    settings: Settings,
    database_url: str,
    organization: str,
    workspace: str,
    subscription: str | None,
    expires_in: int,
    read_only: bool,
) -> None:
    subscription_id = None
    if subscription is not None:
        try:
            subscription_id = uuid.UUID(subscription)
        except ValueError:
            raise typer.BadParameter("not a subscription id", param_hint="--subscription") from None
    if settings.database_url is None:
        from voicehooks.db.migrate import upgrade

        asyncio.run(upgrade(database_url))  # the embedded database may be brand new
    try:
        link = asyncio.run(
            issue_link_database(
                database_url,
                organization_name=organization,
                workspace_name=workspace,
                subscription_id=subscription_id,
                expires_in=expires_in,
                read_only=read_only,
                public_url=settings.public_url,
            )
        )
    except LinkRefused as refused:
        typer.echo(f"Error: {refused}", err=True)
        raise typer.Exit(1) from None
    typer.echo(link.url)
