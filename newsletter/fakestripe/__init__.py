"""Herald's local Stripe: a standalone HTTP fake of the API, hosted pages, test clock and signed webhooks."""

from newsletter.fakestripe.server import FakeStripe, FakeStripeServer

__all__ = ["FakeStripe", "FakeStripeServer"]
