"""Flask commands for the staff console: create a staff account from a terminal."""

from __future__ import annotations

import click
from flask import Flask

from newsletter.addresses import InvalidInput
from newsletter.models import StaffRole
from newsletter.staff import accounts


def register(app: Flask) -> None:
    app.cli.add_command(create_staff)


@click.command("create-staff")
@click.argument("email")
@click.option("--role", type=click.Choice([r.value for r in StaffRole]), required=True,
              help="viewer reads; editor also schedules and sends; admin also manages staff, feeds, keys, settings.")
@click.option("--name", default="", help="How the console shows them.")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="At least 12 characters; asked for when not given.")
def create_staff(email: str, role: str, name: str, password: str) -> None:
    """Create a staff account that signs in to /staff."""
    try:
        user = accounts.create_staff(email, password, StaffRole(role), name=name)
    except InvalidInput as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"staff {user.id}: {user.email} ({user.role.value}) can sign in at /staff/sign-in")
