"""The flask commands: init-db, demo-data, list-subscribers."""

from newsletter.models import Newsletter
from tests.helpers import count, signup


def test_demo_data_is_idempotent_and_names_the_newsletters(app, db):
    runner = app.test_cli_runner()
    first = runner.invoke(args=["demo-data"])
    second = runner.invoke(args=["demo-data"])
    assert first.exit_code == second.exit_code == 0, first.output
    assert "Daily digest" in first.output and "Weekly: the war in Ukraine" in first.output
    assert count(Newsletter) == 2


def test_init_db_upgrades_to_the_latest_migration(app, db):
    result = app.test_cli_runner().invoke(args=["init-db"])
    assert result.exit_code == 0, result.output
    assert "latest migration" in result.output


def test_list_subscribers_filters_by_newsletter_and_status(app, client, db, newsletters):
    signup(client, email="olena@example.com", newsletters=("daily",))
    signup(client, email="taras@example.com", newsletters=("war-weekly",))
    runner = app.test_cli_runner()
    everyone = runner.invoke(args=["list-subscribers"])
    assert "olena@example.com" in everyone.output and "taras@example.com" in everyone.output
    daily = runner.invoke(args=["list-subscribers", "--newsletter", "daily", "--status", "pending"])
    assert "olena@example.com" in daily.output and "taras@example.com" not in daily.output
    recipients = runner.invoke(args=["list-subscribers", "--newsletter", "daily", "--recipients"])
    assert "olena@example.com" not in recipients.output  # pending readers are not mailed
    unknown = runner.invoke(args=["list-subscribers", "--newsletter", "nope"])
    assert unknown.exit_code == 2
    assert "no newsletter 'nope'" in unknown.output


def test_pages_carry_security_headers(client, newsletters):
    headers = client.get("/subscribe").headers
    assert headers["Referrer-Policy"] == "no-referrer"
    assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
    assert headers["X-Content-Type-Options"] == "nosniff"
