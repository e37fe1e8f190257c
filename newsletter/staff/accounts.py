"""Staff accounts: argon2 passwords, TOTP two-factor codes, roles, and the sign-in throttle."""

from __future__ import annotations

import datetime as dt
import functools
import logging

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from flask import current_app
from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError

from newsletter.addresses import InvalidInput, clean_name, normalize_email
from newsletter.extensions import db
from newsletter.models import AuditAction, SignInThrottle, StaffRole, StaffUser, utcnow
from newsletter.staff import audit
from newsletter.staff.audit import Actor

log = logging.getLogger(__name__)

MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
# Failures older than this no longer count towards a lockout.
FAILURE_WINDOW = dt.timedelta(days=1)
MAX_LOCKOUT = dt.timedelta(days=1)
TOTP_ISSUER_SUFFIX = "staff"

_hasher = PasswordHasher()


class SignInFailed(Exception):
    """Wrong address, password or code; the message never says which."""

    def __init__(self, message: str = "That email address and password don't match an account."):
        super().__init__(message)


class SignInLocked(Exception):
    """Too many failures for this account or address: no password is checked until `retry_after` passes."""

    def __init__(self, retry_after: float):
        minutes = max(1, round(retry_after / 60))
        super().__init__(f"Too many failed sign-ins. Try again in {minutes} minute{'s' if minutes != 1 else ''}.")
        self.retry_after = retry_after


def _config():
    return current_app.config["HERALD"]


@functools.cache
def _dummy_hash() -> str:
    return _hasher.hash("a password nobody has")


# --- Accounts -----------------------------------------------------------------------------------


def _email(raw: str) -> str:
    try:
        return normalize_email(raw).key
    except InvalidInput as exc:
        raise InvalidInput(str(exc), "email") from None


def check_password(password: str, email: str = "") -> str:
    """Return the password if it is long enough and not the address itself, or raise InvalidInput."""
    if len(password or "") < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"A password needs at least {MIN_PASSWORD_LENGTH} characters.", "password")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise InvalidInput("That password is too long.", "password")
    if email and password.strip().lower() in {email.lower(), email.split("@")[0].lower()}:
        raise InvalidInput("The password cannot be your email address.", "password")
    return password


def find_staff(email: str) -> StaffUser | None:
    try:
        key = _email(email)
    except InvalidInput:
        return None
    return db.session.scalar(select(StaffUser).where(StaffUser.email == key))


def create_staff(email: str, password: str, role: StaffRole | str, name: str = "",
                 actor: Actor = audit.CLI) -> StaffUser:
    """Create a staff account with a hashed password."""
    key = _email(email)
    role = StaffRole(role)
    check_password(password, key)
    if db.session.scalar(select(StaffUser.id).where(StaffUser.email == key)) is not None:
        raise InvalidInput(f"There is already a staff account for {key}.", "email")
    user = StaffUser(email=key, name=clean_name(name), role=role, password_hash=_hasher.hash(password))
    db.session.add(user)
    db.session.flush()
    audit.record(actor, AuditAction.STAFF_CREATED, f"staff {user.id}", f"created {key} as {role.value}")
    db.session.commit()
    return user


def list_staff() -> list[StaffUser]:
    return list(db.session.scalars(select(StaffUser).order_by(StaffUser.active.desc(), StaffUser.email)))


def _get(staff_id: int) -> StaffUser:
    user = db.session.get(StaffUser, staff_id)
    if user is None:
        raise InvalidInput(f"No staff account {staff_id}.", "staff")
    return user


def _active_admins(excluding: int) -> int:
    return db.session.scalar(
        select(func.count()).select_from(StaffUser)
        .where(StaffUser.role == StaffRole.ADMIN, StaffUser.active, StaffUser.id != excluding)
    ) or 0


def change_staff(staff_id: int, actor: Actor, *, role: StaffRole | str | None = None, active: bool | None = None,
                 name: str | None = None) -> StaffUser:
    """Change a staff member's role, name or whether they may sign in; the last admin stays an admin."""
    user = _get(staff_id)
    changes = []
    demoted = role is not None and StaffRole(role) != StaffRole.ADMIN
    if user.role == StaffRole.ADMIN and (demoted or active is False) and _active_admins(user.id) == 0:
        raise InvalidInput("There must always be an active admin: make someone else an admin first.", "role")
    if role is not None and StaffRole(role) != user.role:
        changes.append(f"role {user.role.value} -> {StaffRole(role).value}")
        user.role = StaffRole(role)
    if active is not None and active != user.active:
        changes.append("reactivated" if active else "deactivated")
        user.active = active
        if not active:
            user.session_epoch += 1  # signs them out everywhere at once
    if name is not None and clean_name(name) != user.name:
        changes.append("name changed")
        user.name = clean_name(name)
    if changes:
        audit.record(actor, AuditAction.STAFF_CHANGED, f"staff {user.id}", f"{user.email}: {', '.join(changes)}")
    db.session.commit()
    return user


def change_password(staff_id: int, current: str | None, new: str, actor: Actor) -> StaffUser:
    """Set a new password (checking the current one unless an admin resets it); ends every other session."""
    user = _get(staff_id)
    if current is not None and not _verify(user, current):
        raise InvalidInput("Your current password is not right.", "current_password")
    check_password(new, user.email)
    user.password_hash = _hasher.hash(new)
    user.password_changed_at = utcnow()
    user.session_epoch += 1
    audit.record(actor, AuditAction.PASSWORD_CHANGED, f"staff {user.id}", f"password of {user.email} changed")
    db.session.commit()
    return user


def _verify(user: StaffUser, password: str) -> bool:
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        return False
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return True


# --- The throttle -------------------------------------------------------------------------------


def throttle_keys(email: str, ip: str) -> list[str]:
    # The address as typed, lowercased: an unknown account is counted like a real one.
    return [f"account:{(email or '').strip().lower()[:320]}", f"ip:{ip or '-'}"]


def locked_for(keys: list[str], now: dt.datetime | None = None) -> float:
    """Return the seconds until these keys may try again; 0 when none is locked."""
    now = now or utcnow()
    until = db.session.scalar(
        select(func.max(SignInThrottle.locked_until)).where(SignInThrottle.key.in_(keys))
    )
    if until is not None and until.tzinfo is None:
        until = until.replace(tzinfo=dt.UTC)
    return max((until - now).total_seconds(), 0.0) if until else 0.0


def _throttle_row(key: str, now: dt.datetime) -> SignInThrottle:
    row = db.session.scalar(select(SignInThrottle).where(SignInThrottle.key == key).with_for_update())
    if row is not None:
        return row
    row = SignInThrottle(key=key, failures=0, first_failure_at=now)
    try:
        with db.session.begin_nested():
            db.session.add(row)
    except IntegrityError:
        # Another failure for the same key landed first: count on its row.
        return db.session.scalars(select(SignInThrottle).where(SignInThrottle.key == key).with_for_update()).one()
    return row


def _record_failure(keys: list[str], now: dt.datetime) -> float:
    """Count a failure on every key; return how long the worst of them is now locked for (0 if none)."""
    config = _config()
    worst = 0.0
    for key in keys:
        row = _throttle_row(key, now)
        if now - row.first_failure_at > FAILURE_WINDOW:
            row.failures, row.first_failure_at, row.locked_until = 0, now, None
        row.failures += 1
        over = row.failures - config.STAFF_LOCKOUT_FAILURES
        if over >= 0:
            # Each failure past the threshold doubles the wait: guessing gets slower, never faster.
            wait = min(dt.timedelta(minutes=config.STAFF_LOCKOUT_MINUTES) * 2 ** min(over, 16), MAX_LOCKOUT)
            row.locked_until = now + wait
            worst = max(worst, wait.total_seconds())
    return worst


def _clear_failures(keys: list[str]) -> None:
    db.session.execute(delete(SignInThrottle).where(SignInThrottle.key.in_(keys)))


def _fail(keys: list[str], email: str, ip: str, now: dt.datetime, why: str) -> SignInFailed | SignInLocked:
    locked = _record_failure(keys, now)
    user = find_staff(email)
    actor = Actor(user.id if user else None, (email or "")[:320], ip)
    audit.record(actor, AuditAction.SIGN_IN_FAILED, f"staff {user.id}" if user else "", why)
    if locked:
        audit.record(actor, AuditAction.SIGN_IN_LOCKED, f"staff {user.id}" if user else "",
                     f"further sign-ins refused for {round(locked / 60)} min")
    db.session.commit()
    return SignInLocked(locked) if locked else SignInFailed()


# --- Signing in ---------------------------------------------------------------------------------


def authenticate(email: str, password: str, ip: str, now: dt.datetime | None = None) -> StaffUser:
    """Check an address and password; return the account, or raise SignInFailed or SignInLocked.

    A locked account or address is refused before the password is looked at. When the account has
    two-factor sign-in, the caller must then ask for a code (verify_code) before the session is made.
    """
    now = now or utcnow()
    keys = throttle_keys(email, ip)
    wait = locked_for(keys, now)
    if wait:
        raise SignInLocked(wait)
    user = find_staff(email)
    if user is None or not user.active:
        _spend_hash_time(password)
        raise _fail(keys, email, ip, now, "unknown or inactive account" if user is None else "inactive account")
    if not _verify(user, password or ""):
        raise _fail(keys, email, ip, now, "wrong password")
    if not user.has_two_factor:
        return complete_sign_in(user.id, ip, now)
    db.session.commit()  # a rehashed password, if any
    return user


def _spend_hash_time(password: str) -> None:
    # As long as a real check, so the answer's timing does not tell which addresses have accounts.
    try:
        _hasher.verify(_dummy_hash(), password or "-")
    except VerificationError:
        pass


def verify_code(staff_id: int, code: str, ip: str, now: dt.datetime | None = None) -> StaffUser:
    """Check the second step's six-digit code; return the account signed in, or raise like authenticate."""
    now = now or utcnow()
    user = _get(staff_id)
    keys = throttle_keys(user.email, ip)
    wait = locked_for(keys, now)
    if wait:
        raise SignInLocked(wait)
    if not user.active or not user.has_two_factor or not _accept_code(user, code, now):
        raise _fail(keys, user.email, ip, now, "wrong two-factor code")
    return complete_sign_in(user.id, ip, now)


def complete_sign_in(staff_id: int, ip: str, now: dt.datetime | None = None) -> StaffUser:
    """Clear the failure counts and record the sign-in."""
    user = _get(staff_id)
    _clear_failures(throttle_keys(user.email, ip))
    user.last_signed_in_at = now or utcnow()
    audit.record(Actor.of(user, ip), AuditAction.SIGN_IN, f"staff {user.id}")
    db.session.commit()
    return user


# --- Two-factor codes ---------------------------------------------------------------------------


def _step(now: dt.datetime) -> int:
    return int(now.timestamp()) // 30


def _accept_code(user: StaffUser, code: str, now: dt.datetime, secret: str | None = None) -> bool:
    """Accept a code of the current step or its neighbours, once: a code seen before is refused."""
    code = "".join((code or "").split())
    if not code.isdigit() or len(code) != 6:
        return False
    totp = pyotp.TOTP(secret or user.totp_secret)
    step = _step(now)
    for candidate in (step - 1, step, step + 1):
        if candidate > (user.totp_last_step or 0) and pyotp.utils.strings_equal(totp.generate_otp(candidate), code):
            user.totp_last_step = candidate
            return True
    return False


def new_totp_secret() -> str:
    return pyotp.random_base32()


def totp_uri(secret: str, email: str) -> str:
    """The otpauth:// URI an authenticator app reads (from the QR code or typed)."""
    issuer = f"{_config().NEWSROOM_NAME} {TOTP_ISSUER_SUFFIX}"
    return pyotp.TOTP(secret).provisioning_uri(name=email, issuer_name=issuer)


def enable_two_factor(staff_id: int, secret: str, code: str, actor: Actor, now: dt.datetime | None = None) -> StaffUser:
    """Turn on two-factor sign-in once a code made with the new secret checks out."""
    user = _get(staff_id)
    if len(secret or "") < 16:
        raise InvalidInput("Start again: the setup expired.", "code")
    if not _accept_code(user, code, now or utcnow(), secret=secret):
        db.session.rollback()
        raise InvalidInput("That code is not right. Check the time on your phone and try the newest code.", "code")
    user.totp_secret = secret
    audit.record(actor, AuditAction.TWO_FACTOR_ENABLED, f"staff {user.id}", f"two-factor on for {user.email}")
    db.session.commit()
    return user


def disable_two_factor(staff_id: int, actor: Actor, code: str | None = None, now: dt.datetime | None = None) -> None:
    """Turn off two-factor sign-in: with a current code for oneself, or by an admin for a lost phone."""
    user = _get(staff_id)
    if not user.has_two_factor:
        return
    if code is not None and not _accept_code(user, code, now or utcnow()):
        db.session.rollback()
        raise InvalidInput("That code is not right.", "code")
    user.totp_secret = None
    user.totp_last_step = 0
    audit.record(actor, AuditAction.TWO_FACTOR_DISABLED, f"staff {user.id}", f"two-factor off for {user.email}")
    db.session.commit()
