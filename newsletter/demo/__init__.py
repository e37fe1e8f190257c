"""Demo data for `make run` and the tests: the newsroom's newsletters and a real article."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select

from newsletter.extensions import db
from newsletter.models import Newsletter

HERE = Path(__file__).resolve().parent
SAMPLE_ARTICLE = HERE / "article-2024-11-13.txt"

NEWSLETTERS = [
    {
        "slug": "daily",
        "name": "Daily digest",
        "description": "The day's most important stories from Ukraine, every morning.",
        "frequency": "every morning at 07:00 Kyiv time",
        "list_id": "daily.list-id.herald.localhost",
        "position": 0,
    },
    {
        "slug": "war-weekly",
        "name": "Weekly: the war in Ukraine",
        "description": "A week of the war explained: the front, diplomacy, and what comes next.",
        "frequency": "every Saturday",
        "list_id": "war-weekly.list-id.herald.localhost",
        "position": 1,
    },
]


def load_newsletters() -> list[Newsletter]:
    """Create the demo newsletters if missing; never overwrite an edited one."""
    out = []
    for spec in NEWSLETTERS:
        found = db.session.scalar(select(Newsletter).where(Newsletter.slug == spec["slug"]))
        if found is None:
            found = Newsletter(**spec)
            db.session.add(found)
        out.append(found)
    db.session.commit()
    return out
