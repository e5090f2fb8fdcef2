"""Keyset paging over (created_at, id), newest first: stable while rows are inserted."""

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Select, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

# The position after which a page starts: (created_at, id) of the last row of the page before.
Cursor = tuple[datetime, uuid.UUID]


def newest_first(
    query: Select[Any],
    created_at: InstrumentedAttribute[Any],
    row_id: InstrumentedAttribute[Any],
    after: Cursor | None,
    limit: int,
) -> Select[Any]:
    """Rows older than the cursor (ties broken by id), newest first, at most `limit`."""
    if after is not None:
        cursor_time, cursor_id = after
        query = query.where(
            or_(created_at < cursor_time, and_(created_at == cursor_time, row_id < cursor_id))
        )
    return query.order_by(created_at.desc(), row_id.desc()).limit(limit)
