"""Flask commands for sending editions: now, as a test, watched with a progress bar; pause, resume, cancel, retry."""

from __future__ import annotations

import time

import click
from flask import Flask
from flask.cli import AppGroup

from newsletter import digests, mail, sending
from newsletter.addresses import InvalidInput
from newsletter.extensions import db
from newsletter.models import Audience, DeliveryStatus, Edition, EditionStatus

sending_cli = AppGroup("sending", help="Send editions and watch, pause, resume, cancel or retry a send.")


def register(app: Flask) -> None:
    app.cli.add_command(sending_cli)


def _fail(exc: Exception) -> None:
    raise click.ClickException(str(exc))


def _line(p: sending.Progress) -> str:
    parts = [f"{status.value} {p.counts.get(status, 0)}" for status in DeliveryStatus if p.counts.get(status, 0)]
    state = p.status.value + (" (paused)" if p.paused else "")
    return f"edition {p.edition_id}: {state}; {p.total} deliveries: " + (", ".join(parts) or "none")


@sending_cli.command("send")
@click.argument("edition_id", type=int)
@click.option("--watch", is_flag=True, help="Then follow it with a progress bar.")
def send_now(edition_id: int, watch: bool) -> None:
    """Send an edition now: freeze a draft first, fan out to every reader, start the workers on it."""
    edition = db.session.get(Edition, edition_id)
    if edition is None:
        raise click.ClickException(f"no edition {edition_id}")
    try:
        if edition.status == EditionStatus.DRAFT and digests.freeze_edition(edition_id) == EditionStatus.SKIPPED:
            raise click.ClickException(f"edition {edition_id} has no articles; it was skipped")
        started = sending.start_edition(edition_id)
    except InvalidInput as exc:
        _fail(exc)
    if not started.started:
        status = db.session.get(Edition, edition_id, populate_existing=True).status.value
        raise click.ClickException(f"edition {edition_id} is {status}, not frozen: nothing started")
    click.echo(f"edition {edition_id}: {started.recipients} deliveries queued")
    if watch and started.recipients:
        _watch(edition_id, 1.0)


@sending_cli.command("test")
@click.argument("edition_id", type=int)
@click.argument("address")
@click.option("--audience", type=click.Choice([a.value for a in Audience]), default=Audience.NON_MEMBER.value,
              show_default=True)
def send_test(edition_id: int, address: str, audience: str) -> None:
    """Send one copy of an edition to ADDRESS now, subject marked [Test]; nothing is recorded."""
    try:
        message_id = sending.send_test(edition_id, address, Audience(audience))
    except (InvalidInput, mail.MailError) as exc:
        _fail(exc)
    click.echo(f"sent {message_id} to {address}")


@sending_cli.command("status")
@click.argument("edition_id", type=int)
def status(edition_id: int) -> None:
    """Show an edition's deliveries counted by status."""
    try:
        click.echo(_line(sending.progress(edition_id)))
    except InvalidInput as exc:
        _fail(exc)


def _watch(edition_id: int, interval: float) -> None:
    try:
        first = sending.progress(edition_id)
    except InvalidInput as exc:
        _fail(exc)
    shown = first.done
    with click.progressbar(length=max(first.total, 1), label=f"edition {edition_id}",
                           show_pos=True, show_percent=True) as bar:
        bar.update(shown)
        current = first
        while current.status == EditionStatus.SENDING and not current.paused:
            time.sleep(interval)
            current = sending.progress(edition_id)
            bar.update(current.done - shown)
            shown = current.done
    click.echo(_line(current))


@sending_cli.command("watch")
@click.argument("edition_id", type=int)
@click.option("--interval", type=float, default=1.0, show_default=True, help="Seconds between looks.")
def watch(edition_id: int, interval: float) -> None:
    """Follow a send with a progress bar until it is sent, paused or cancelled."""
    _watch(edition_id, interval)


@sending_cli.command("pause")
@click.argument("edition_id", type=int)
def pause(edition_id: int) -> None:
    """Pause a send: batches stop within moments; nothing more goes until it is resumed."""
    try:
        changed = sending.pause(edition_id)
    except InvalidInput as exc:
        _fail(exc)
    click.echo(f"edition {edition_id}: " + ("paused" if changed else "not sending, or already paused"))


@sending_cli.command("resume")
@click.argument("edition_id", type=int)
def resume(edition_id: int) -> None:
    """Resume a paused send."""
    try:
        changed = sending.resume(edition_id)
    except InvalidInput as exc:
        _fail(exc)
    click.echo(f"edition {edition_id}: " + ("resumed" if changed else "not paused"))


@sending_cli.command("cancel")
@click.argument("edition_id", type=int)
@click.confirmation_option(prompt="Readers not yet sent this edition will never get it. Cancel?")
def cancel(edition_id: int) -> None:
    """Cancel a frozen or sending edition: what has not gone will not go."""
    try:
        cancelled = sending.cancel(edition_id)
    except InvalidInput as exc:
        _fail(exc)
    click.echo(f"edition {edition_id}: cancelled; {cancelled} deliveries will not be sent")


@sending_cli.command("retry-failed")
@click.argument("edition_id", type=int)
def retry_failed(edition_id: int) -> None:
    """Queue an edition's failed deliveries again (bounced addresses stay suppressed)."""
    try:
        queued = sending.retry_failed(edition_id)
    except InvalidInput as exc:
        _fail(exc)
    click.echo(f"edition {edition_id}: {queued} failed deliveries queued again")


@sending_cli.command("dkim-record")
def dkim_record() -> None:
    """Print the DNS TXT record for DKIM_KEY_FILE."""
    from flask import current_app

    config = current_app.config["HERALD"]
    signer = sending.dkim_signer(mail.parse_from(config.MAIL_FROM)[1])
    if signer is None:
        raise click.ClickException("DKIM_KEY_FILE is not set")
    click.echo(f"{signer.selector}._domainkey.{signer.domain}. TXT \"{signer.dns_record()}\"")
