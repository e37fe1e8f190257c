"""SQLAlchemy models, by domain; importing this package registers every table."""

from newsletter.models.base import utcnow
from newsletter.models.mail import MailJob, MailJobStatus
from newsletter.models.subscribers import (
    ConsentEvent,
    ConsentKind,
    Newsletter,
    Subscriber,
    Subscription,
    SubscriptionStatus,
    Suppression,
    SuppressionReason,
)

__all__ = [
    "ConsentEvent",
    "ConsentKind",
    "MailJob",
    "MailJobStatus",
    "Newsletter",
    "Subscriber",
    "Subscription",
    "SubscriptionStatus",
    "Suppression",
    "SuppressionReason",
    "utcnow",
]
