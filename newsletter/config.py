"""Read Herald's settings from the environment into one Config, and refuse unsafe production settings."""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, fields
from pathlib import Path
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var"

DEV_SECRET_KEY = "dev-only-secret-key-do-not-use-in-production"  # noqa: S105 - refused in production
DEV_POSTAL_ADDRESS = "Herald Newsroom, 1 Example Street, 01001 Kyiv, Ukraine"
# The local fake Stripe (python -m newsletter.fakestripe) that `make run` starts, and what it accepts.
LOCAL_STRIPE_API_BASE = "http://127.0.0.1:12111"
DEV_STRIPE_SECRET_KEY = "sk_test_herald_local_fake_stripe"  # noqa: S105 - accepted by the local fake only
DEV_STRIPE_WEBHOOK_SECRET = "whsec_dev"  # noqa: S105 - refused in production by Config.check


class ConfigError(RuntimeError):
    """A setting is missing or unsafe; the message names the variable."""


def _bool(value: str) -> bool:
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass
class Config:
    """Every setting Herald reads, with its development default (see the README table)."""

    HERALD_ENV: str = "development"
    NEWSROOM_NAME: str = "Herald"
    SECRET_KEY: str = DEV_SECRET_KEY
    BASE_URL: str = "http://127.0.0.1:5000"
    DATABASE_URL: str = f"sqlite:///{VAR / 'herald.sqlite3'}"
    CELERY_BROKER_URL: str = "filesystem://"
    CELERY_BROKER_FOLDER: str = str(VAR / "broker")
    REDIS_URL: str = ""
    MAIL_URL: str = f"outbox:{VAR / 'outbox'}"
    MAIL_FROM: str = "Herald <newsletter@localhost>"
    POSTAL_ADDRESS: str = DEV_POSTAL_ADDRESS
    TRUSTED_PROXIES: int = 0
    # Public forms: per client IP. Never applied to one-click unsubscribe or webhooks.
    SIGNUP_RATE_LIMIT: str = "5 per minute; 40 per hour"
    RATELIMIT_ENABLED: bool = True
    CSRF_ENABLED: bool = True
    # At most this many confirmation mails to one address in 24 hours.
    CONFIRMATION_MAILS_PER_DAY: int = 3
    CONFIRM_TOKEN_HOURS: int = 72
    CONSENT_TEXT_VERSION: str = "2026-11-v1"
    # Articles and editions. An edition is drafted this long before its time, so editors can review it.
    EDITION_LEAD_MINUTES: int = 60
    # After downtime, an edition late by less than this is still made; an older one is recorded as missed.
    EDITION_GRACE_HOURS: float = 6.0
    # An edition picks articles published at most this long before its time.
    ARTICLE_WINDOW_HOURS: float = 48.0
    # The most articles one edition may hold (a schedule's limit is capped to it); keeps mail under 100 KB.
    MAX_EDITION_ARTICLES: int = 25
    # Feeds: seconds to connect and between bytes, the most bytes read, and the default fetch interval.
    FEED_TIMEOUT: float = 10.0
    FEED_MAX_BYTES: int = 5_000_000
    FEED_INTERVAL_MINUTES: int = 15
    # The every-minute tick; tests shorten it.
    TICK_SECONDS: float = 60.0
    # A transactional mail still unsent this long after it was queued is re-enqueued by the tick.
    MAIL_REQUEUE_SECONDS: float = 120.0
    SMTP_TIMEOUT: float = 30.0
    # First retry of a transactional mail after a temporary failure; doubles each time, capped at 300 s.
    MAIL_RETRY_BASE_SECONDS: float = 5.0
    # Stripe. An empty API base means the real Stripe; the default is the local fake, whose key is filled in.
    STRIPE_SECRET_KEY: str = ""
    STRIPE_API_BASE: str = LOCAL_STRIPE_API_BASE
    STRIPE_WEBHOOK_SECRET: str = DEV_STRIPE_WEBHOOK_SECRET
    # Stripe's own dunning mails can replace ours; then Herald sends no payment-failed mail.
    STRIPE_SENDS_PAYMENT_FAILED_MAIL: bool = False
    # A stored webhook event still unhandled this long after it arrived is enqueued again by the tick.
    WEBHOOK_REQUEUE_SECONDS: float = 30.0
    # One-time donations, in whole units of DONATION_CURRENCY (cents are allowed in the amount given).
    DONATION_MIN: float = 2.0
    DONATION_MAX: float = 10_000.0
    DONATION_CURRENCY: str = "eur"
    # The newsletter the membership page offers with its "also get the daily digest" box (a slug).
    MEMBERSHIP_NEWSLETTER: str = "daily"
    # The staff console. A session ends this long after sign-in, however busy.
    STAFF_SESSION_HOURS: float = 12.0
    # Sign-in form posts per client IP; on top of it, STAFF_LOCKOUT_FAILURES wrong tries for one account
    # or one IP refuse further tries for STAFF_LOCKOUT_MINUTES, doubling with each further failure.
    STAFF_SIGNIN_RATE_LIMIT: str = "10 per minute; 60 per hour"
    STAFF_LOCKOUT_FAILURES: int = 5
    STAFF_LOCKOUT_MINUTES: float = 15.0
    # Times in the console are shown in this zone.
    STAFF_TIMEZONE: str = "Europe/Kyiv"
    # Uploaded CSV imports are kept here; the worker reads them, so both processes must see the folder.
    UPLOAD_FOLDER: str = str(VAR / "uploads")
    IMPORT_MAX_BYTES: int = 200_000_000
    # The sending engine. Deliveries per batch (one task's claim) and batch chains run per edition
    # (match the workers' total concurrency).
    SEND_BATCH_SIZE: int = 500
    SEND_CONCURRENCY: int = 2
    # Messages per second across all workers together; 0 is unlimited. Redis holds the bucket when
    # REDIS_URL is set, the database otherwise.
    SEND_RATE: float = 0.0
    # A batch's lease; renewed while it runs, reclaimed by the tick once it has run out.
    SEND_LEASE_SECONDS: float = 120.0
    # Temporary failures (4xx, a dropped connection) are retried this many times in all, after a
    # delay that starts here and doubles, with jitter, up to the maximum.
    SEND_MAX_ATTEMPTS: int = 6
    SEND_RETRY_SECONDS: float = 60.0
    SEND_RETRY_MAX_SECONDS: float = 3600.0
    # Feedback-ID's constant SenderId (Gmail's feedback loop: 5-15 characters).
    FEEDBACK_ID_SENDER: str = "herald"
    # The mailto: in List-Unsubscribe; empty means unsubscribe@ the sender's domain.
    LIST_UNSUBSCRIBE_MAILTO: str = ""
    # DKIM signing when a PEM RSA key file is given; the domain defaults to the From address's.
    DKIM_KEY_FILE: str = ""
    DKIM_SELECTOR: str = "herald"
    DKIM_DOMAIN: str = ""
    # Tests only: "kill-after-accept:N" SIGKILLs the worker once its N-th message was accepted by
    # the server and before it was recorded (the crash drill). Refused in production.
    SEND_FAULT: str = ""

    def __post_init__(self) -> None:
        if not self.STRIPE_SECRET_KEY and self.uses_local_stripe:
            self.STRIPE_SECRET_KEY = DEV_STRIPE_SECRET_KEY

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides) -> Config:
        """Build a Config from environment variables, then apply explicit overrides."""
        env = os.environ if environ is None else environ
        values: dict = {}
        for f in fields(cls):
            if f.name not in env:
                continue
            raw = env[f.name]
            if f.type in ("int", int):
                values[f.name] = int(raw)
            elif f.type in ("float", float):
                values[f.name] = float(raw)
            elif f.type in ("bool", bool):
                values[f.name] = _bool(raw)
            else:
                values[f.name] = raw
        values.update(overrides)
        return cls(**values)

    @property
    def is_production(self) -> bool:
        return self.HERALD_ENV == "production"

    @property
    def uses_local_stripe(self) -> bool:
        """Whether Stripe calls go to a fake on this machine rather than to Stripe."""
        host = urlsplit(self.STRIPE_API_BASE).hostname or ""
        return host in {"127.0.0.1", "localhost", "::1"}

    @property
    def mail_domain(self) -> str:
        """The domain our Message-IDs live on: the sender's own."""
        addr = self.MAIL_FROM.rsplit("<", 1)[-1].rstrip(">").strip()
        return addr.rsplit("@", 1)[-1] or "localhost"

    def check(self) -> None:
        """Refuse to start in production with a missing secret or an insecure setting."""
        if self.HERALD_ENV not in {"development", "production", "test"}:
            raise ConfigError(f"HERALD_ENV must be development, production or test, not {self.HERALD_ENV!r}")
        if self.TRUSTED_PROXIES < 0:
            raise ConfigError("TRUSTED_PROXIES must be 0 or more")
        self._check_billing()
        if self.STAFF_SESSION_HOURS <= 0 or self.STAFF_LOCKOUT_FAILURES < 1 or self.STAFF_LOCKOUT_MINUTES <= 0:
            raise ConfigError("STAFF_SESSION_HOURS, STAFF_LOCKOUT_FAILURES and STAFF_LOCKOUT_MINUTES must be positive")
        try:
            ZoneInfo(self.STAFF_TIMEZONE)
        except (ZoneInfoNotFoundError, ValueError):
            zone = self.STAFF_TIMEZONE
            raise ConfigError(f"STAFF_TIMEZONE must be an IANA time zone like Europe/Kyiv, not {zone!r}") from None
        self._check_sending()
        if not self.is_production:
            return
        if not os.environ.get("SECRET_KEY") and self.SECRET_KEY == DEV_SECRET_KEY:
            raise ConfigError("SECRET_KEY must be set in production (a long random string)")
        if self.SECRET_KEY == DEV_SECRET_KEY or len(self.SECRET_KEY) < 32:
            raise ConfigError("SECRET_KEY is the development default or shorter than 32 characters")
        if urlsplit(self.BASE_URL).scheme != "https":
            raise ConfigError("BASE_URL must be an https:// address in production")
        if self.DATABASE_URL.startswith("sqlite"):
            raise ConfigError("DATABASE_URL must point at PostgreSQL in production, not SQLite")
        if self.MAIL_URL.startswith(("outbox:", "memory:")):
            raise ConfigError("MAIL_URL must be an smtp:// address in production")
        if not self.POSTAL_ADDRESS or self.POSTAL_ADDRESS == DEV_POSTAL_ADDRESS:
            raise ConfigError("POSTAL_ADDRESS must be the newsroom's real postal address in production")
        if "localhost" in self.MAIL_FROM:
            raise ConfigError("MAIL_FROM must be an address on the newsroom's own domain in production")
        if not self.CSRF_ENABLED or not self.RATELIMIT_ENABLED:
            raise ConfigError("CSRF_ENABLED and RATELIMIT_ENABLED cannot be switched off in production")
        if self.uses_local_stripe:
            raise ConfigError("STRIPE_API_BASE must be empty in production, so payments go to Stripe")
        if not self.STRIPE_SECRET_KEY.startswith(("sk_", "rk_")) or self.STRIPE_SECRET_KEY == DEV_STRIPE_SECRET_KEY:
            raise ConfigError("STRIPE_SECRET_KEY must be set in production (a secret or restricted key)")
        webhook_secret = self.STRIPE_WEBHOOK_SECRET
        if not webhook_secret.startswith("whsec_") or webhook_secret == DEV_STRIPE_WEBHOOK_SECRET:
            raise ConfigError("STRIPE_WEBHOOK_SECRET must be set in production (the endpoint's whsec_ signing secret)")

    def _check_billing(self) -> None:
        if not 0 < self.DONATION_MIN <= self.DONATION_MAX:
            raise ConfigError("DONATION_MIN must be above 0 and at most DONATION_MAX")
        if len(self.DONATION_CURRENCY) != 3 or not self.DONATION_CURRENCY.isalpha():
            raise ConfigError("DONATION_CURRENCY must be a three-letter ISO currency code, e.g. eur")

    def _check_sending(self) -> None:
        if not 1 <= self.SEND_BATCH_SIZE <= 1000 or self.SEND_CONCURRENCY < 1 or self.SEND_MAX_ATTEMPTS < 1:
            raise ConfigError("SEND_BATCH_SIZE must be 1-1000; SEND_CONCURRENCY and SEND_MAX_ATTEMPTS at least 1")
        if self.SEND_RATE < 0 or self.SEND_LEASE_SECONDS <= 0 or self.SEND_RETRY_SECONDS <= 0:
            raise ConfigError("SEND_RATE must be 0 or more; SEND_LEASE_SECONDS and SEND_RETRY_SECONDS positive")
        if not 5 <= len(self.FEEDBACK_ID_SENDER) <= 15 or not self.FEEDBACK_ID_SENDER.replace("-", "").isalnum():
            raise ConfigError("FEEDBACK_ID_SENDER must be 5-15 letters, digits or hyphens")
        if self.DKIM_KEY_FILE and not Path(self.DKIM_KEY_FILE).is_file():
            raise ConfigError(f"DKIM_KEY_FILE {self.DKIM_KEY_FILE!r} is not a readable file")
        if self.SEND_FAULT and self.is_production:
            raise ConfigError("SEND_FAULT is for tests and cannot be set in production")

    def flask_settings(self) -> dict:
        """The subset Flask and its extensions read under their own names."""
        secure = urlsplit(self.BASE_URL).scheme == "https"
        return {
            "SECRET_KEY": self.SECRET_KEY,
            "SQLALCHEMY_DATABASE_URI": self.DATABASE_URL,
            "SQLALCHEMY_ENGINE_OPTIONS": {"pool_pre_ping": True},
            "WTF_CSRF_ENABLED": self.CSRF_ENABLED,
            "WTF_CSRF_TIME_LIMIT": None,
            "RATELIMIT_ENABLED": self.RATELIMIT_ENABLED,
            "RATELIMIT_STORAGE_URI": self.REDIS_URL or "memory://",
            "RATELIMIT_HEADERS_ENABLED": True,
            # If Redis is briefly away, count in memory rather than answer a reader with a 500.
            "RATELIMIT_SWALLOW_ERRORS": True,
            "RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True,
            "SESSION_COOKIE_SECURE": secure,
            "SESSION_COOKIE_HTTPONLY": True,
            "SESSION_COOKIE_SAMESITE": "Lax",
            "PERMANENT_SESSION_LIFETIME": dt.timedelta(hours=self.STAFF_SESSION_HOURS),
            "MAX_CONTENT_LENGTH": 1024 * 1024,
            "MAX_FORM_MEMORY_SIZE": 64 * 1024,
            "PREFERRED_URL_SCHEME": "https" if secure else "http",
        }
