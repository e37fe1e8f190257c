"""Stripe's test card numbers and how each behaves when attached and when charged."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class TestCard:
    """What a test card does: ``attach`` fails with a decline, ``charge`` fails later, or it succeeds."""

    brand: str
    funding: str
    # "ok": charges succeed; "charge_fails": attaches, every charge is declined;
    # "requires_action": on-session payments authenticate, off-session ones need the customer.
    behaviour: str
    attach_decline: str | None = None


CARDS: dict[str, TestCard] = {
    "4242424242424242": TestCard("visa", "credit", "ok"),
    "4000056655665556": TestCard("visa", "debit", "ok"),
    "5555555555554444": TestCard("mastercard", "credit", "ok"),
    "378282246310005": TestCard("amex", "credit", "ok"),
    "4000000000000002": TestCard("visa", "credit", "ok", attach_decline="generic_decline"),
    "4000000000009995": TestCard("visa", "credit", "ok", attach_decline="insufficient_funds"),
    "4000000000000341": TestCard("visa", "credit", "charge_fails"),
    "4000002760003184": TestCard("visa", "credit", "requires_action"),
}

DECLINE_MESSAGES = {
    "generic_decline": "Your card was declined.",
    "insufficient_funds": "Your card has insufficient funds.",
    "test_mode_live_card": (
        "Your card was declined. Your request was in test mode, but used a non test (live) card. "
        "For a list of valid test cards, visit: https://stripe.com/docs/testing."
    ),
    "authentication_required": "Your card was declined. This transaction requires authentication.",
}


class CardProblem(Exception):
    """The card cannot be used; ``code`` and ``decline_code`` follow Stripe's card error fields."""

    def __init__(self, message: str, code: str, decline_code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.decline_code = decline_code


def normalise(number: str) -> str:
    """Strip the spaces and dashes people type between groups of digits."""
    return "".join(ch for ch in number if ch not in " -")


def luhn_ok(number: str) -> bool:
    """Return whether the digits pass the Luhn checksum every card number carries."""
    if not number.isdigit() or not 12 <= len(number) <= 19:
        return False
    total = 0
    for i, ch in enumerate(reversed(number)):
        digit = int(ch)
        if i % 2:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return total % 10 == 0


def check(number: str) -> TestCard:
    """Return the test card for a typed number, or raise the problem Stripe would report on attach."""
    digits = normalise(number)
    if not digits:
        raise CardProblem("Your card number is incomplete.", "incomplete_number")
    if not luhn_ok(digits):
        raise CardProblem("Your card number is invalid.", "incorrect_number")
    card = CARDS.get(digits)
    if card is None:
        # Test mode refuses real card numbers; so does the fake.
        raise CardProblem(DECLINE_MESSAGES["test_mode_live_card"], "card_declined", "test_mode_live_card")
    if card.attach_decline:
        raise CardProblem(DECLINE_MESSAGES[card.attach_decline], "card_declined", card.attach_decline)
    return card


def fingerprint(number: str) -> str:
    """Return a stable per-number fingerprint like Stripe's (same card, same fingerprint)."""
    return hashlib.sha256(normalise(number).encode()).hexdigest()[:16]
