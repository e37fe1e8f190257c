"""The console's gate, route by route: sign-in first, CSRF on every change, roles on every view, safe sessions."""

from __future__ import annotations

import datetime as dt
import re

import pytest
from sqlalchemy import func, select

from newsletter import create_app
from newsletter.config import Config
from newsletter.models import AuditEvent, StaffRole
from newsletter.staff import accounts
from newsletter.staff.audit import CLI
from tests.conftest import herald_env
from tests.staff_support import PASSWORD, make_staff, post, sign_in, signed_in
from tests.support import csrf_from

SIGN_IN = "/staff/sign-in"


APP = create_app(Config.from_env(herald_env()))


def _staff_routes() -> list[tuple[str, str, str]]:
    """(method, path, endpoint) of every console route, read from a freshly built app's url_map."""
    app = APP
    routes = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.split(".")[0] != "staff":
            continue
        path = re.sub(r"<(?:int:)?[a-z_]+>", "1", rule.rule)
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            routes.append((method, path, rule.endpoint))
    return sorted(routes)


ROUTES = _staff_routes()
CHANGES = [r for r in ROUTES if r[0] == "POST"]
PUBLIC = {"staff.sign_in"}


def _id(route) -> str:
    return f"{route[0]} {route[1]}"


def test_the_console_has_many_routes_and_each_is_checked_below():
    # A guard on the parametrization itself: if the url_map read failed, the tests below would pass vacuously.
    assert len(ROUTES) > 40 and len(CHANGES) > 25


@pytest.mark.parametrize("route", [r for r in ROUTES if r[2] not in PUBLIC], ids=_id)
def test_without_a_session_every_console_route_redirects_to_sign_in(app, client, route):
    method, path, _ = route
    app.config["WTF_CSRF_ENABLED"] = False  # the gate, not CSRF, is what this test is about
    response = client.open(path, method=method)
    assert response.status_code in (302, 303), (path, response.status_code)
    assert response.headers["Location"].startswith(SIGN_IN)


@pytest.mark.parametrize("route", CHANGES, ids=_id)
def test_every_state_changing_route_refuses_a_missing_csrf_token(app, db, route):
    method, path, _ = route
    client = signed_in(app, StaffRole.ADMIN)
    before = db.session.scalar(select(func.count()).select_from(AuditEvent))
    response = client.open(path, method=method, data={"email": "x@herald-news.example.org", "password": PASSWORD})
    assert response.status_code == 400, (path, response.status_code)
    assert "form has expired" in response.text
    assert db.session.scalar(select(func.count()).select_from(AuditEvent)) == before


def test_every_console_view_is_gated_by_the_role_decorator(app):
    for endpoint, view in app.view_functions.items():
        if endpoint.startswith("staff.") and endpoint != "staff.static":
            assert getattr(view, "staff_role", None) or getattr(view, "staff_public", False), endpoint


def _needs_more_than_viewer(endpoint: str) -> bool:
    role = getattr(APP.view_functions[endpoint], "staff_role", None)
    return role is not None and role != StaffRole.VIEWER


@pytest.mark.parametrize("route", [r for r in ROUTES if _needs_more_than_viewer(r[2])], ids=_id)
def test_a_viewer_is_refused_every_editor_and_admin_route_with_403(app, route):
    method, path, endpoint = route
    client = signed_in(app, StaffRole.VIEWER)
    response = post(client, path) if method == "POST" else client.get(path)
    assert response.status_code == 403, (path, response.status_code)


def test_an_editor_is_refused_the_admin_pages(app):
    client = signed_in(app, StaffRole.EDITOR)
    for path in ("/staff/team", "/staff/api-keys", "/staff/audit", "/staff/settings", "/staff/feeds/new"):
        assert client.get(path).status_code == 403, path
    assert client.get("/staff/editions").status_code == 200


def test_the_sign_in_page_itself_needs_no_session(client):
    page = client.get(SIGN_IN)
    assert page.status_code == 200
    assert 'name="csrf_token"' in page.text


def test_the_session_cookie_is_httponly_and_lax_and_the_console_is_never_cached(app):
    user = make_staff(StaffRole.VIEWER)
    client = app.test_client()
    response = sign_in(client, user.email)
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    assert "Expires=" in cookie  # a permanent session: it lasts STAFF_SESSION_HOURS, not the browser's life
    assert "Secure" not in cookie  # BASE_URL is http in the tests
    assert client.get("/staff/").headers["Cache-Control"] == "no-store"


def test_the_session_cookie_is_secure_when_base_url_is_https():
    config = Config.from_env(herald_env(BASE_URL="https://news.example.com"))
    assert config.flask_settings()["SESSION_COOKIE_SECURE"] is True
    assert config.flask_settings()["PERMANENT_SESSION_LIFETIME"] == dt.timedelta(hours=config.STAFF_SESSION_HOURS)


def test_a_session_older_than_the_lifetime_is_over(app):
    client = signed_in(app, StaffRole.VIEWER)
    assert client.get("/staff/").status_code == 200
    hours = app.config["HERALD"].STAFF_SESSION_HOURS
    with client.session_transaction() as session:
        session["staff_signed_in_at"] -= hours * 3600 + 1
    assert client.get("/staff/").headers["Location"].startswith(SIGN_IN)


def test_a_new_password_or_deactivation_ends_the_other_sessions(app):
    first = signed_in(app, StaffRole.ADMIN, email="admin@herald-news.example.org")
    second = app.test_client()
    sign_in(second, "admin@herald-news.example.org")
    accounts.change_password(first.staff.id, PASSWORD, "another long passphrase", CLI)
    assert second.get("/staff/").headers["Location"].startswith(SIGN_IN)

    viewer = signed_in(app, StaffRole.VIEWER)
    accounts.change_staff(viewer.staff.id, CLI, active=False)
    assert viewer.get("/staff/").headers["Location"].startswith(SIGN_IN)


def _post_sign_in(client, page_path: str, email: str):
    page = client.get(page_path)
    return client.post(SIGN_IN, data={"csrf_token": csrf_from(page.text), "email": email, "password": PASSWORD})


def test_sign_in_goes_back_to_the_page_asked_for_but_never_off_site(app):
    user = make_staff(StaffRole.VIEWER)
    client = app.test_client()
    location = client.get("/staff/subscribers?q=olena").headers["Location"]
    assert location.startswith("/staff/sign-in?next=")
    assert _post_sign_in(client, location, user.email).headers["Location"] == "/staff/subscribers?q=olena"

    for target in ("//evil.example.com/", "https://evil.example.com/staff", "/staff\\..\\evil"):
        other = app.test_client()
        response = _post_sign_in(other, f"/staff/sign-in?next={target}", user.email)
        assert response.headers["Location"] == "/staff/", target
