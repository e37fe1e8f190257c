"""Staff accounts: the create-staff command, passwords, the sign-in lockout, two-factor codes, the audit trail."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import select

from newsletter.addresses import InvalidInput
from newsletter.models import AuditAction, AuditEvent, SignInThrottle, StaffRole, StaffUser, utcnow
from newsletter.staff import accounts
from newsletter.staff.audit import CLI
from tests.staff_support import PASSWORD, make_staff, post, sign_in, signed_in, totp_code
from tests.support import csrf_from

EMAIL = "editor@herald-news.example.org"


def _actions(db) -> list[str]:
    return list(db.session.scalars(select(AuditEvent.action).order_by(AuditEvent.id)))


# --- The command --------------------------------------------------------------------------------


def test_create_staff_asks_for_the_password_twice_and_hashes_it_with_argon2(app, db):
    result = app.test_cli_runner().invoke(args=["create-staff", "Iryna@Herald-News.example.org", "--role", "admin",
                                                "--name", "Iryna"], input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    user = db.session.scalars(select(StaffUser)).one()
    assert (user.email, user.role, user.name) == ("iryna@herald-news.example.org", StaffRole.ADMIN, "Iryna")
    assert user.password_hash.startswith("$argon2id$") and PASSWORD not in user.password_hash
    assert _actions(db) == ["staff_created"]


def test_create_staff_takes_the_password_as_an_option_and_refuses_a_short_one_or_a_duplicate(app, db):
    runner = app.test_cli_runner()
    assert runner.invoke(args=["create-staff", EMAIL, "--role", "editor", "--password", PASSWORD]).exit_code == 0
    short = runner.invoke(args=["create-staff", "b@herald-news.example.org", "--role", "viewer", "--password", "short"])
    assert short.exit_code != 0 and "at least 12 characters" in short.output
    again = runner.invoke(args=["create-staff", EMAIL.upper(), "--role", "viewer", "--password", PASSWORD])
    assert again.exit_code != 0 and "already a staff account" in again.output
    bad_role = runner.invoke(args=["create-staff", "c@herald-news.example.org", "--role", "owner", "--password",
                                   PASSWORD])
    assert bad_role.exit_code != 0


def test_the_last_active_admin_cannot_be_demoted_or_deactivated(app, db):
    admin = make_staff(StaffRole.ADMIN)
    with pytest.raises(InvalidInput):
        accounts.change_staff(admin.id, CLI, role=StaffRole.EDITOR)
    with pytest.raises(InvalidInput):
        accounts.change_staff(admin.id, CLI, active=False)
    second = make_staff(StaffRole.ADMIN, email="second@herald-news.example.org")
    accounts.change_staff(admin.id, CLI, role=StaffRole.VIEWER)
    assert db.session.get(StaffUser, admin.id).role == StaffRole.VIEWER
    assert second.role == StaffRole.ADMIN


# --- Signing in ---------------------------------------------------------------------------------


def test_an_editor_signs_in_with_the_right_password_and_the_sign_in_is_audited(app, db, client):
    make_staff(StaffRole.EDITOR, email=EMAIL)
    response = sign_in(client, "Editor@Herald-News.example.org")
    assert response.status_code == 303 and response.headers["Location"] == "/staff/"
    page = client.get("/staff/")
    assert page.status_code == 200 and "Dashboard" in page.text
    event = db.session.scalars(select(AuditEvent)).one()
    assert (event.action, event.staff_email, event.ip) == ("sign_in", EMAIL, "127.0.0.1")


def test_a_wrong_password_and_an_unknown_address_get_the_same_answer(app, db, client):
    make_staff(StaffRole.EDITOR, email=EMAIL)
    wrong = sign_in(client, EMAIL, "not the password at all")
    unknown = sign_in(client, "nobody@herald-news.example.org", "not the password at all")
    assert wrong.status_code == unknown.status_code == 401
    assert "don&#39;t match an account" in wrong.text and "don&#39;t match an account" in unknown.text
    assert client.get("/staff/").status_code == 303
    assert _actions(db) == ["sign_in_failed", "sign_in_failed"]


def test_five_wrong_passwords_lock_the_account_even_against_the_right_one(app, db, client):
    make_staff(StaffRole.EDITOR, email=EMAIL)
    for _ in range(4):
        assert sign_in(client, EMAIL, "wrong password, again").status_code == 401
    fifth = sign_in(client, EMAIL, "wrong password, again")
    assert fifth.status_code == 429 and "Too many failed sign-ins" in fifth.text
    # Refused before the password is looked at: the right one does not get in either.
    right = sign_in(client, EMAIL, PASSWORD)
    assert right.status_code == 429 and "Try again in 15 minutes" in right.text
    assert client.get("/staff/").status_code == 303
    assert "sign_in_locked" in _actions(db)


def test_the_lock_is_per_address_too_so_guessing_across_accounts_is_slowed(app, db, client):
    for i in range(5):
        sign_in(client, f"guess{i}@herald-news.example.org", "password guess")
    make_staff(StaffRole.EDITOR, email=EMAIL)
    assert sign_in(client, EMAIL, PASSWORD).status_code == 429  # this IP made five failures
    other_ip = app.test_client()
    page = other_ip.get("/staff/sign-in", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    response = other_ip.post("/staff/sign-in", environ_base={"REMOTE_ADDR": "10.1.2.3"},
                             data={"csrf_token": csrf_from(page.text), "email": EMAIL, "password": PASSWORD})
    assert response.status_code == 303


def test_the_lock_runs_out_then_doubles_with_each_further_failure_and_a_success_clears_it(app, db):
    make_staff(StaffRole.EDITOR, email=EMAIL)
    now = utcnow()
    for _ in range(5):
        with pytest.raises((accounts.SignInFailed, accounts.SignInLocked)):
            accounts.authenticate(EMAIL, "wrong password, again", "10.0.0.1", now)
    assert accounts.locked_for(accounts.throttle_keys(EMAIL, "10.0.0.1"), now) == 15 * 60
    later = now + dt.timedelta(minutes=16)
    with pytest.raises(accounts.SignInLocked) as locked:
        accounts.authenticate(EMAIL, "wrong password, third time", "10.0.0.1", later)
    assert locked.value.retry_after == 30 * 60  # the sixth failure doubles the wait
    much_later = later + dt.timedelta(minutes=31)
    assert accounts.authenticate(EMAIL, PASSWORD, "10.0.0.1", much_later).email == EMAIL
    assert db.session.scalars(select(SignInThrottle)).all() == []


def test_sign_in_posts_are_rate_limited_per_address(app, client):
    limit = int(app.config["HERALD"].STAFF_SIGNIN_RATE_LIMIT.split()[0])
    answers = [sign_in(client, f"someone{i}@herald-news.example.org", "x" * 12).status_code for i in range(limit + 1)]
    assert answers[-1] == 429 and "a lot of requests" in sign_in(client, EMAIL, "x" * 12).text


def test_a_deactivated_account_cannot_sign_in(app, db, client):
    user = make_staff(StaffRole.EDITOR, email=EMAIL)
    make_staff(StaffRole.ADMIN)
    accounts.change_staff(user.id, CLI, active=False)
    assert sign_in(client, EMAIL).status_code == 401


def test_sign_out_ends_the_session(app, db):
    client = signed_in(app, StaffRole.VIEWER)
    response = post(client, "/staff/sign-out")
    assert response.headers["Location"] == "/staff/sign-in"
    assert client.get("/staff/").status_code == 303
    assert _actions(db)[-1] == "sign_out"


def test_a_staff_member_changes_their_password_knowing_the_current_one(app, db):
    client = signed_in(app, StaffRole.VIEWER, password="the first long password")
    wrong = post(client, "/staff/account", {"current_password": "not it at all", "new_password": "x" * 14})
    assert wrong.status_code == 400 and "current password is not right" in wrong.text
    ok = post(client, "/staff/account", {"current_password": "the first long password",
                                         "new_password": "a brand new passphrase"})
    assert ok.status_code == 303
    assert client.get("/staff/account").status_code == 200  # this session carries on
    assert sign_in(app.test_client(), client.staff.email, "a brand new passphrase").status_code == 303


# --- Two-factor ---------------------------------------------------------------------------------


def _enrol(client) -> str:
    page = client.get("/staff/account/two-factor")
    assert page.status_code == 200
    assert "otpauth://totp/" in page.text and '<svg role="img"' in page.text
    with client.session_transaction() as session:
        secret = session["staff_totp_setup"]
    assert secret in page.text
    bad = post(client, "/staff/account/two-factor", {"code": "000000"})
    assert bad.status_code == 400 and "not right" in bad.text
    good = post(client, "/staff/account/two-factor", {"code": totp_code(secret)})
    assert good.status_code == 303
    return secret


def test_two_factor_enrolment_shows_the_secret_and_a_qr_and_checks_a_code_before_turning_on(app, db):
    client = signed_in(app, StaffRole.EDITOR, email=EMAIL)
    secret = _enrol(client)
    user = db.session.get(StaffUser, client.staff.id, populate_existing=True)
    assert user.totp_secret == secret
    assert "two_factor_enabled" in _actions(db)


def test_with_two_factor_the_password_alone_does_not_sign_in_and_a_code_works_once(app, db):
    secret = _enrol(signed_in(app, StaffRole.EDITOR, email=EMAIL))
    browser = app.test_client()
    step_one = sign_in(browser, EMAIL)
    assert step_one.headers["Location"] == "/staff/sign-in/code"
    assert browser.get("/staff/").status_code == 303  # not signed in yet
    page = browser.get("/staff/sign-in/code")
    wrong = browser.post("/staff/sign-in/code", data={"csrf_token": csrf_from(page.text), "code": "123456"})
    assert wrong.status_code == 401
    # The code from enrolment was used already; the next step's code is accepted once.
    code = totp_code(secret, utcnow() + dt.timedelta(seconds=30))
    right = browser.post("/staff/sign-in/code", data={"csrf_token": csrf_from(page.text), "code": code})
    assert right.status_code == 303 and browser.get("/staff/").status_code == 200

    replay = app.test_client()
    sign_in(replay, EMAIL)
    page = replay.get("/staff/sign-in/code")
    again = replay.post("/staff/sign-in/code", data={"csrf_token": csrf_from(page.text), "code": code})
    assert again.status_code == 401


def test_wrong_codes_count_towards_the_lockout(app, db):
    _enrol(signed_in(app, StaffRole.EDITOR, email=EMAIL))
    browser = app.test_client()
    sign_in(browser, EMAIL)
    page = browser.get("/staff/sign-in/code")
    answers = [browser.post("/staff/sign-in/code", data={"csrf_token": csrf_from(page.text), "code": "000000"})
               .status_code for _ in range(5)]
    assert answers == [401, 401, 401, 401, 429]


def test_an_admin_resets_a_lost_phone_and_the_owner_can_turn_it_off_with_a_code(app, db):
    editor = signed_in(app, StaffRole.EDITOR, email=EMAIL)
    secret = _enrol(editor)
    admin = signed_in(app, StaffRole.ADMIN)
    assert post(admin, f"/staff/team/{editor.staff.id}/reset-two-factor").status_code == 303
    assert db.session.get(StaffUser, editor.staff.id, populate_existing=True).totp_secret is None
    secret = _enrol(editor)
    later = totp_code(secret, utcnow() + dt.timedelta(seconds=30))
    assert post(editor, "/staff/account/two-factor/disable", {"code": later}).status_code == 303
    assert db.session.get(StaffUser, editor.staff.id, populate_existing=True).totp_secret is None
    assert _actions(db).count("two_factor_disabled") == 2


# --- Admin pages --------------------------------------------------------------------------------


def test_an_admin_adds_a_staff_member_changes_their_role_and_reads_the_audit_log(app, db):
    admin = signed_in(app, StaffRole.ADMIN)
    created = post(admin, "/staff/team", {"email": "new.editor@herald-news.example.org", "name": "Taras",
                                          "role": "editor", "password": "a first password here"})
    assert created.status_code == 303
    user = db.session.scalar(select(StaffUser).where(StaffUser.email == "new.editor@herald-news.example.org"))
    assert user.role == StaffRole.EDITOR
    assert post(admin, f"/staff/team/{user.id}", {"role": "viewer", "active": "yes"}).status_code == 303
    assert db.session.get(StaffUser, user.id, populate_existing=True).role == StaffRole.VIEWER
    log = admin.get("/staff/audit")
    assert "staff created" in log.text and "role editor -&gt; viewer" in log.text
    only = admin.get(f"/staff/audit?action={AuditAction.STAFF_CHANGED.value}")
    assert "staff created" not in only.text.split("<tbody>")[1]


def test_the_settings_page_never_shows_a_secret(app):
    admin = signed_in(app, StaffRole.ADMIN)
    page = admin.get("/staff/settings")
    assert page.status_code == 200
    assert app.config["HERALD"].SECRET_KEY not in page.text
    assert app.config["HERALD"].DATABASE_URL not in page.text
    assert "STAFF_SESSION_HOURS" in page.text
