"""The portal's stylesheet and script, served from the package (no build step, no CDN)."""

from pathlib import Path

from fastapi.responses import Response

from voicehooks.portal.web import PortalError

_DIRECTORY = Path(__file__).resolve().parent / "static"
_TYPES = {".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8"}
# Read once: the files are small and only these names are served.
_FILES = {
    path.name: (path.read_bytes(), _TYPES[path.suffix])
    for path in _DIRECTORY.iterdir()
    if path.suffix in _TYPES
}


def static_response(name: str) -> Response:
    found = _FILES.get(name)
    if found is None:
        raise PortalError(404, "Not found", "There is no such file.")
    content, media_type = found
    return Response(
        content, media_type=media_type, headers={"Cache-Control": "public, max-age=300"}
    )
