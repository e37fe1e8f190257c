"""Small helpers the tests share: sign up through the pages, read tokens out of mail."""

from __future__ import annotations

import re

from sqlalchemy import func, select

from newsletter.extensions import db
from tests.support import csrf_from


def signup(client, email="olena@example.com", name="Олена", newsletters=("daily",), source="/subscribe", **extra):
    """Fill the signup form the way a browser does, CSRF token included."""
    page = client.get(source if source.startswith("/") else "/subscribe")
    data = {"csrf_token": csrf_from(page.text), "email": email, "name": name,
            "newsletters": list(newsletters), "source": source}
    data.update(extra)
    return client.post("/subscribe", data=data)


def count(model) -> int:
    return db.session.scalar(select(func.count()).select_from(model))


def link_path(text: str, kind: str) -> str:
    """Return the path of the first link of a kind (confirm, preferences, unsubscribe) in a mail body."""
    match = re.search(rf"https?://[^/\s]+(/{kind}/[^\s<>\"]+)", text)
    assert match, f"no {kind} link in:\n{text}"
    return match.group(1)
