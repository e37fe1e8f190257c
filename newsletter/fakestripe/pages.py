"""Hosted pages a customer sees: Checkout, the customer portal and the hosted invoice page (plain HTML forms)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlencode

from flask import Blueprint, Response, abort, current_app, redirect, render_template, request, url_for

from newsletter.fakestripe.cards import CARDS
from newsletter.fakestripe.engine import Engine
from newsletter.fakestripe.errors import StripeAPIError

bp = Blueprint("fakestripe_pages", __name__)

SUBMIT_LABELS = {"donate": "Donate", "book": "Book", "subscribe": "Subscribe", "pay": "Pay"}


def _engine() -> Engine:
    return current_app.extensions["fakestripe"].engine


@bp.app_template_filter("money")
def money(amount: int | None, currency: str = "usd") -> str:
    """Format minor units as "12.00 USD"."""
    if amount is None:
        return "—"
    return f"{amount / 100:,.2f} {currency.upper()}"


@bp.app_template_filter("date")
def date(timestamp: int | None) -> str:
    """Format a Unix time as a calendar date."""
    if not timestamp:
        return "—"
    return datetime.fromtimestamp(timestamp, UTC).strftime("%d %B %Y")


def _test_cards() -> list[tuple[str, str]]:
    notes = {
        "ok": "succeeds",
        "charge_fails": "attaches, then every charge is declined",
        "requires_action": "off-session charges need authentication",
    }
    out = []
    for number, card in CARDS.items():
        spaced = " ".join(number[i : i + 4] for i in range(0, len(number), 4))
        out.append((spaced, f"declined ({card.attach_decline})" if card.attach_decline else notes[card.behaviour]))
    return out


def _checkout_page(session_id: str, error: str | None = None, form: dict[str, str] | None = None,
                   status: int = 200) -> tuple[str, int]:
    view = _engine().checkout_view(session_id)
    if view is None:
        abort(404)
    session = view["session"]
    label = SUBMIT_LABELS.get(session["submit_type"] or "", "Subscribe" if session["mode"] == "subscription" else "Pay")
    return render_template(
        "checkout.html", view=view, session=session, error=error, form=form or {}, submit_label=label,
        custom_amount=session["amount_total"] is None, test_cards=_test_cards(),
    ), status


@bp.get("/c/pay/<session_id>")
def checkout(session_id: str) -> tuple[str, int]:
    """Show the hosted Checkout page."""
    return _checkout_page(session_id)


@bp.post("/c/pay/<session_id>")
def checkout_submit(session_id: str) -> Any:
    """Pay the session with the card typed in; redirect to success_url or show the decline."""
    form = {k: request.form.get(k, "") for k in ("email", "name", "card_number", "amount")}
    try:
        outcome = _engine().complete_checkout(
            session_id, email=form["email"], name=form["name"], card_number=form["card_number"],
            amount=form["amount"] or None,
        )
    except StripeAPIError:
        abort(404)
    if outcome.redirect:
        return redirect(outcome.redirect, 303)
    return _checkout_page(session_id, outcome.error, form, 402)


def _portal_page(session_id: str, *, error: str | None = None, status: int = 200) -> tuple[str, int]:
    view = _engine().portal_view(session_id)
    if view is None:
        abort(404)
    return render_template("portal.html", view=view, error=error, notice=request.args.get("notice")), status


def _back_to_portal(session_id: str, notice: str) -> Response:
    target = url_for("fakestripe_pages.portal", session_id=session_id) + "?" + urlencode({"notice": notice})
    return redirect(target, 303)


@bp.get("/p/session/<session_id>")
def portal(session_id: str) -> tuple[str, int]:
    """Show the customer portal."""
    return _portal_page(session_id)


@bp.post("/p/session/<session_id>/card")
def portal_card(session_id: str) -> Any:
    """Replace the card on file."""
    try:
        error = _engine().portal_update_card(session_id, request.form.get("card_number", ""))
    except StripeAPIError:
        abort(404)
    if error:
        return _portal_page(session_id, error=error, status=402)
    return _back_to_portal(session_id, "Your card was updated.")


@bp.post("/p/session/<session_id>/subscriptions/<sub_id>/cancel")
def portal_cancel(session_id: str, sub_id: str) -> Any:
    """Cancel a subscription at the end of its period (``when=period_end``) or at once (``when=now``)."""
    when = request.form.get("when", "period_end")
    if when not in ("period_end", "now"):
        abort(400)
    try:
        _engine().portal_cancel(session_id, sub_id, now=when == "now")
    except StripeAPIError as exc:
        if exc.status == 404:
            abort(404)
        return _portal_page(session_id, error=exc.message, status=400)
    notice = "Your membership was canceled." if when == "now" else "Your membership will end at the end of the period."
    return _back_to_portal(session_id, notice)


@bp.post("/p/session/<session_id>/subscriptions/<sub_id>/renew")
def portal_renew(session_id: str, sub_id: str) -> Any:
    """Undo a cancellation at period end."""
    try:
        _engine().portal_renew(session_id, sub_id)
    except StripeAPIError as exc:
        if exc.status == 404:
            abort(404)
        return _portal_page(session_id, error=exc.message, status=400)
    return _back_to_portal(session_id, "Your membership will renew.")


def _invoice_page(invoice_id: str, *, error: str | None = None, status: int = 200) -> tuple[str, int]:
    view = _engine().invoice_view(invoice_id)
    if view is None:
        abort(404)
    return render_template("invoice.html", view=view, error=error, paid=request.args.get("paid")), status


@bp.get("/i/<invoice_id>")
def invoice(invoice_id: str) -> tuple[str, int]:
    """Show the hosted invoice page."""
    return _invoice_page(invoice_id)


@bp.post("/i/<invoice_id>")
def invoice_pay(invoice_id: str) -> Any:
    """Pay the invoice with the card on file (authenticating) or a new card."""
    try:
        error = _engine().pay_invoice_hosted(invoice_id, request.form.get("card_number") or None)
    except StripeAPIError:
        abort(404)
    if error:
        return _invoice_page(invoice_id, error=error, status=402)
    return redirect(url_for("fakestripe_pages.invoice", invoice_id=invoice_id, paid="1"), 303)
