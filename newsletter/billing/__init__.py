"""Paid memberships: the Stripe gateway, webhook event dispatch and membership state."""
