"""Whether the parts built beside the console (the sending engine, memberships) are installed and migrated."""

from __future__ import annotations

import importlib.util

from sqlalchemy import inspect

from newsletter.extensions import db

# Only positive answers are kept: a table that appears after a migration is seen without a restart.
_seen_tables: set[str] = set()


def has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def has_table(name: str) -> bool:
    """Whether the database has this table (a part's migration may not have run yet)."""
    if name in _seen_tables:
        return True
    if inspect(db.session.get_bind()).has_table(name):
        _seen_tables.add(name)
        return True
    return False


def sending_ready() -> bool:
    """The sending engine's code and its deliveries table are both there."""
    return has_module("newsletter.sending") and has_module("newsletter.models.sending") and has_table("deliveries")


def billing_ready() -> bool:
    """The memberships code and its tables are both there."""
    return has_module("newsletter.models.billing") and has_table("memberships")
