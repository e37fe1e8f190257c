"""The beat schedule lives in celery_settings(); this runs a standalone beat for production.

Run: celery -A workers.beat beat   (exactly one beat; duplicate ticks are harmless anyway)
"""

from workers.celery_app import celery  # noqa: F401
