"""Blueprints by audience: public pages now; account, membership, webhooks, staff and API later."""
