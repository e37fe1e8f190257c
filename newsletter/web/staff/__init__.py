"""The staff console under /staff: one blueprint, its views split by subject."""

from newsletter.web.staff import admin, audience, auth, content, dashboard, editions, newsletters  # noqa: F401
from newsletter.web.staff.access import bp

__all__ = ["bp"]
