"""Keyset paging, for every list: the rows after a position in the list's order, newest first.

A list is ordered by its sort key, every column descending (subscriptions and logs by
(created_at, id), the portal's deliveries by (created_at, seq), the API's deliveries by seq).
A page is the rows whose key is below the position of the last row shown, compared as a row so
that ties in one column are broken by the next: stable while rows are inserted, and the same
cost on the thousandth page as on the first. The tokens that carry positions to clients are
`voicehooks.page_tokens`.
"""

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, literal, tuple_
from sqlalchemy.orm import InstrumentedAttribute

# The position after which a page starts: the sort key's values of the last row shown.
Position = Sequence[Any]
# The position of the lists by (created_at, id).
Cursor = tuple[datetime, uuid.UUID]

Column = ColumnElement[Any] | InstrumentedAttribute[Any]


def below(key: Sequence[Column], position: Position) -> ColumnElement[bool]:
    """Rows whose sort key is below `position`.

    With more than one column the leading one is also bounded on its own: the row comparison
    implies it, and stated alone it lets the planner skip the partitions of later days when
    the key leads with created_at.
    """
    if len(key) == 1:
        return key[0] < position[0]
    # Each value typed as its column (a bound int is INTEGER otherwise, too small for seq).
    values = (literal(value, column.type) for column, value in zip(key, position, strict=True))
    return and_(key[0] <= position[0], tuple_(*key) < tuple_(*values))


def newest(key: Sequence[Column]) -> list[ColumnElement[Any]]:
    """ORDER BY terms of a list: every column of its sort key descending."""
    return [column.desc() for column in key]


def newest_first(
    query: Select[Any], key: Sequence[Column], after: Position | None, limit: int
) -> Select[Any]:
    """A page of `query`: the rows below `after` (from the first row when None), newest first,
    at most `limit`."""
    if after is not None:
        query = query.where(below(key, after))
    return query.order_by(*newest(key)).limit(limit)
