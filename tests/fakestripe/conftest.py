"""Fixtures for the fake Stripe: a webhook receiver, a fresh fake per test, Herald's gateway and a catalogue."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from newsletter.billing.gateway import StripeGateway
from newsletter.fakestripe import FakeStripeServer
from tests.fakestripe.support import API_KEY, SECRET, SEED, TIERS, Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver().start()
    yield server
    server.stop()


@pytest.fixture
def fake_options() -> dict[str, Any]:
    """Options for the fake; override in a test module to change delivery switches."""
    return {}


@pytest.fixture
def fake(receiver: Receiver, fake_options: dict[str, Any]) -> Iterator[FakeStripeServer]:
    options = {"seed": SEED, "retry_backoff": 0.02, **fake_options}
    server = FakeStripeServer(":memory:", webhook_url=receiver.url, webhook_secret=SECRET, **options).start()
    yield server
    server.stop()


@pytest.fixture
def gateway(fake: FakeStripeServer) -> StripeGateway:
    return StripeGateway(API_KEY, api_base=fake.url, webhook_secret=SECRET, max_network_retries=0)


@pytest.fixture
def catalog(gateway: StripeGateway) -> dict[str, dict[str, Any]]:
    return gateway.ensure_catalog(TIERS)
