"""Helpers for the staff console's tests: staff accounts, signing in through the form, posting with CSRF."""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
from pathlib import Path

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


def add_article(title: str, *, hours_ago: float = 2, members_only: bool = False, tags: tuple[str, ...] = ("War",),
                summary: str = "") -> int:
    """Store an article published `hours_ago` hours ago; return its id."""
    from newsletter import articles
    from newsletter.models import ArticleSource

    slug = "-".join(title.lower().split())[:80]
    data = articles.ArticleData(
        title=title, url=f"https://kyivindependent.example.org/{slug}/",
        summary=summary or f"{title}. What happened, and what it means for Ukraine.",
        body=f"<p>{title}: the full story for members.</p>", authors=["Olena Koval"], tags=list(tags),
        published_at=utcnow() - dt.timedelta(hours=hours_ago), members_only=members_only,
    )
    return articles.save_article(data, ArticleSource.MANUAL).article_id


def add_subscriber(email: str, newsletter_ids: list[int], *, status: str = "subscribed", name: str = "",
                   days_ago: float = 0, left_days_ago: float | None = None) -> int:
    """A subscriber in a given state, as if they had joined `days_ago` days ago."""
    from newsletter.addresses import normalize_email
    from newsletter.models import Subscriber, Subscription, SubscriptionStatus

    when = utcnow() - dt.timedelta(days=days_ago)
    address = normalize_email(email)
    person = Subscriber(email=address.email, email_key=address.key, name=name, created_at=when,
                        confirmed_at=when if status in ("subscribed", "unsubscribed") else None)
    for nid in newsletter_ids:
        left = utcnow() - dt.timedelta(days=left_days_ago) if left_days_ago is not None else when
        person.subscriptions.append(Subscription(
            newsletter_id=nid, status=SubscriptionStatus(status), created_at=when, requested_at=when,
            confirmed_at=when if status != "pending" else None,
            unsubscribed_at=left if status == "unsubscribed" else None))
    db.session.add(person)
    db.session.commit()
    return person.id


AXE = Path(__file__).resolve().parent.parent / "node_modules" / "axe-core" / "axe.min.js"


@contextlib.contextmanager
def console_page(bypass_csp: bool = False):
    """A Playwright page in Debian's chromium; bypass_csp lets a test inject axe-core past `script-src 'self'`."""
    from tests.browser import ARGS, CHROMIUM, require_chromium

    require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        try:
            context = browser.new_context(bypass_csp=bypass_csp, viewport={"width": 1280, "height": 900})
            page = context.new_page()
            page.set_default_timeout(15_000)
            yield page
        finally:
            browser.close()


def serious_violations(page) -> list[str]:
    """Run axe-core on the page and return its serious and critical violations, one line each."""
    import pytest

    if not AXE.is_file():
        pytest.skip("axe-core is not installed: run `npm install` (make test does)")
    page.add_script_tag(path=str(AXE))
    result = page.evaluate("async () => await axe.run(document, {resultTypes: ['violations']})")
    return [f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:5]}"
            for v in result["violations"] if v["impact"] in ("serious", "critical")]


def browser_sign_in(page, base: str, email: str, password: str = PASSWORD) -> None:
    page.goto(f"{base}/staff/sign-in")
    page.get_by_label("Email address").fill(email)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
