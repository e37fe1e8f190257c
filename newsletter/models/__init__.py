"""SQLAlchemy models, by domain; importing this package registers every table."""

from newsletter.models.base import utcnow
from newsletter.models.content import (
    ApiKey,
    Article,
    ArticleSource,
    Audience,
    Edition,
    EditionArticle,
    EditionRendering,
    EditionStatus,
    Feed,
    Schedule,
)
from newsletter.models.mail import MailJob, MailJobStatus
from newsletter.models.staff import (
    AuditAction,
    AuditEvent,
    ImportStatus,
    SignInThrottle,
    StaffRole,
    StaffUser,
    SubscriberImport,
)
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
    "AuditAction",
    "AuditEvent",
    "ImportStatus",
    "SignInThrottle",
    "StaffRole",
    "StaffUser",
    "SubscriberImport",
    "ApiKey",
    "Article",
    "ArticleSource",
    "Audience",
    "ConsentEvent",
    "ConsentKind",
    "Edition",
    "EditionArticle",
    "EditionRendering",
    "EditionStatus",
    "Feed",
    "MailJob",
    "MailJobStatus",
    "Newsletter",
    "Schedule",
    "Subscriber",
    "Subscription",
    "SubscriptionStatus",
    "Suppression",
    "SuppressionReason",
    "utcnow",
]
