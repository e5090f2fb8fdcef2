"""Liveness and readiness probes."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is up", operation_id="getHealth")
async def healthz() -> dict[str, str]:
    """Liveness: 200 while the process serves requests, whatever the database does."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="The database is reachable",
    operation_id="getReadiness",
    responses={503: {"description": "The database cannot be reached."}},
)
async def readyz(request: Request) -> JSONResponse:
    """Readiness: 200 when the database answers, else 503 (take the instance out of rotation)."""
    try:
        async with request.app.state.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except Exception:
        return JSONResponse({"status": "database unreachable"}, status_code=503)
    return JSONResponse({"status": "ready"})
