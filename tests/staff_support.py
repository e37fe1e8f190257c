"""Helpers for the staff console's tests: staff accounts, signing in through the form, posting with CSRF."""

from __future__ import annotations

import datetime as dt
import functools

from newsletter.extensions import db
from newsletter.models import StaffRole, StaffUser, utcnow
from newsletter.staff import accounts
from tests.support import csrf_from

PASSWORD = "correct horse battery staple"


@functools.cache
def _password_hash() -> str:
    # argon2 at production cost takes a third of a second here: hash the shared test password once.
    return accounts._hasher.hash(PASSWORD)


def make_staff(role: StaffRole | str = StaffRole.EDITOR, email: str | None = None, name: str = "",
               password: str = PASSWORD) -> StaffUser:
    role = StaffRole(role)
    email = email or f"{role.value}@herald-news.example.org"
    if password != PASSWORD:
        return accounts.create_staff(email, password, role, name=name)
    user = StaffUser(email=email, name=name, role=role, password_hash=_password_hash())
    db.session.add(user)
    db.session.commit()
    return user


def sign_in(client, email: str, password: str = PASSWORD, follow: bool = False):
    """Post the sign-in form the way a browser does, CSRF token included."""
    page = client.get("/staff/sign-in")
    return client.post("/staff/sign-in", data={"csrf_token": csrf_from(page.text), "email": email,
                                              "password": password}, follow_redirects=follow)


def signed_in(app, role: StaffRole | str = StaffRole.EDITOR, **kwargs):
    """A test client with a staff member of this role signed in; the account is on `client.staff`.

    The session is written directly, as a sign-in makes it (the sign-in form has tests of its own).
    """
    user = make_staff(role, **kwargs)
    client = app.test_client()
    with client.session_transaction() as session:
        session.permanent = True
        session["staff_id"], session["staff_epoch"] = user.id, user.session_epoch
        session["staff_signed_in_at"] = utcnow().timestamp()
    client.staff = user
    return client


def token(client) -> str:
    return csrf_from(client.get("/staff/account").text)


def post(client, path: str, data: dict | None = None, **kwargs):
    """POST a console form with a valid CSRF token."""
    return client.post(path, data={"csrf_token": token(client), **(data or {})}, **kwargs)


def totp_code(secret: str, when: dt.datetime | None = None) -> str:
    import pyotp

    return pyotp.TOTP(secret).at(when or utcnow())
