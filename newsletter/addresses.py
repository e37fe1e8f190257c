"""Validate and normalize email addresses and display names at the edge."""

from __future__ import annotations

import hashlib
import unicodedata
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email

MAX_NAME_LENGTH = 100


class InvalidInput(ValueError):
    """Input a person typed that we refuse; the message is shown to them."""

    def __init__(self, message: str, field: str = ""):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Address:
    email: str  # local part as typed, domain lowercased and IDNA-encoded
    key: str  # the comparison key: the whole address lowercased


def _reject_controls(value: str, field: str, label: str) -> None:
    # CR or LF in anything that may reach a mail header would let a reader write headers.
    if any(unicodedata.category(ch) in {"Cc", "Cf", "Zl", "Zp"} and ch not in "\t" for ch in value):
        raise InvalidInput(f"{label} contains line breaks or control characters.", field)


def normalize_email(raw: str) -> Address:
    """Return the address trimmed, its domain lowercased and IDNA-encoded, or raise InvalidInput."""
    if raw is None:
        raise InvalidInput("Please enter your email address.", "email")
    value = raw.strip()
    if not value:
        raise InvalidInput("Please enter your email address.", "email")
    if len(value) > 254:
        raise InvalidInput("That email address is too long.", "email")
    _reject_controls(value, "email", "The email address")
    try:
        info = validate_email(value, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as exc:
        raise InvalidInput(f"That doesn't look like an email address: {exc}", "email") from None
    local = info.local_part
    domain = info.ascii_domain.lower()
    email = f"{local}@{domain}"
    return Address(email=email, key=email.lower())


def email_hash(key: str) -> str:
    """Return the hash a suppression is stored under, so erasure can drop the address itself."""
    return hashlib.sha256(key.strip().lower().encode("utf-8")).hexdigest()


def clean_name(raw: str | None) -> str:
    """Return a display name in any script, trimmed and normalized, or raise InvalidInput."""
    if raw is None:
        return ""
    value = unicodedata.normalize("NFC", raw).strip()
    _reject_controls(value, "name", "The name")
    if len(value) > MAX_NAME_LENGTH:
        raise InvalidInput(f"Please keep your name under {MAX_NAME_LENGTH} characters.", "name")
    return " ".join(value.split())
