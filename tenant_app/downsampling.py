"""Server-side downsampling: when a range has more rows than a chart can show, average buckets."""

from __future__ import annotations

import math
from datetime import datetime

from tenant_app.errors import InvalidInput

DEFAULT_MAX_POINTS = 500
MAX_POINTS_LIMIT = 5000
# Bucket widths are rounded up to one of these, so charts get stable, readable steps.
NICE_STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400)


class InvalidRange(InvalidInput):
    """A time range or point count that cannot be served."""


def check_range(start: datetime, end: datetime, max_points: int) -> None:
    """Raise InvalidRange for an empty/inverted range or a point count outside 2..MAX_POINTS_LIMIT."""
    if end <= start:
        raise InvalidRange("'to' must be after 'from'")
    if not 2 <= max_points <= MAX_POINTS_LIMIT:
        raise InvalidRange(f"max_points must be between 2 and {MAX_POINTS_LIMIT}")


def bucket_seconds(start: datetime, end: datetime, row_count: int, max_points: int) -> int | None:
    """The bucket width in seconds, or None when all `row_count` rows fit in `max_points`.

    The width is the smallest "nice" step that yields at most `max_points` buckets over the range.
    """
    check_range(start, end, max_points)
    if row_count <= max_points:
        return None
    needed = math.ceil((end - start).total_seconds() / max_points)
    for step in NICE_STEPS:
        if step >= needed:
            return step
    return math.ceil(needed / 86400) * 86400
