"""Build Stripe objects in the current API shape (2026-10-28.endive): every key Stripe sends, sensible values."""

from __future__ import annotations

from typing import Any

API_VERSION = "2026-10-28.endive"
DECLINE_SELLER_MESSAGE = "The bank did not return any further details with this decline."


def _address() -> dict[str, Any]:
    return {"city": None, "country": None, "line1": None, "line2": None, "postal_code": None, "state": None}


def _list(url: str, data: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"object": "list", "data": data or [], "has_more": False, "url": url}


def product(
    *, id: str, created: int, name: str, description: str | None, active: bool, metadata: dict[str, str]
) -> dict[str, Any]:
    """Return a product."""
    return {
        "id": id, "object": "product", "active": active, "created": created, "updated": created,
        "default_price": None, "description": description, "images": [], "livemode": False,
        "marketing_features": [], "metadata": metadata, "name": name, "package_dimensions": None,
        "shippable": None, "statement_descriptor": None, "tax_code": None, "type": "service",
        "unit_label": None, "url": None,
    }


def price(
    *,
    id: str,
    created: int,
    product: str,
    currency: str,
    unit_amount: int | None,
    recurring: dict[str, Any] | None,
    custom_unit_amount: dict[str, Any] | None,
    lookup_key: str | None,
    nickname: str | None,
    metadata: dict[str, str],
    active: bool,
    tax_behavior: str,
) -> dict[str, Any]:
    """Return a price; ``recurring`` is {interval, interval_count} or None for one-time prices."""
    return {
        "id": id, "object": "price", "active": active, "billing_scheme": "per_unit", "created": created,
        "currency": currency,
        "custom_unit_amount": None if custom_unit_amount is None else {
            "maximum": custom_unit_amount.get("maximum"),
            "minimum": custom_unit_amount.get("minimum"),
            "preset": custom_unit_amount.get("preset"),
        },
        "livemode": False, "lookup_key": lookup_key, "metadata": metadata, "nickname": nickname,
        "product": product,
        "recurring": None if recurring is None else {
            "interval": recurring["interval"], "interval_count": recurring.get("interval_count", 1),
            "meter": None, "trial_period_days": None, "usage_type": "licensed",
        },
        "tax_behavior": tax_behavior, "tiers_mode": None, "transform_quantity": None,
        "type": "one_time" if recurring is None else "recurring",
        "unit_amount": unit_amount,
        "unit_amount_decimal": None if unit_amount is None else str(unit_amount),
    }


def plan_from_price(price_obj: dict[str, Any]) -> dict[str, Any]:
    """Return the legacy ``plan`` view Stripe still nests in subscription items."""
    recurring = price_obj["recurring"] or {"interval": "month", "interval_count": 1}
    return {
        "id": price_obj["id"], "object": "plan", "active": price_obj["active"],
        "amount": price_obj["unit_amount"], "amount_decimal": price_obj["unit_amount_decimal"],
        "billing_scheme": "per_unit", "created": price_obj["created"], "currency": price_obj["currency"],
        "interval": recurring["interval"], "interval_count": recurring["interval_count"],
        "livemode": False, "metadata": price_obj["metadata"], "meter": None,
        "nickname": price_obj["nickname"], "product": price_obj["product"], "tiers_mode": None,
        "transform_usage": None, "trial_period_days": None, "usage_type": "licensed",
    }


def customer(
    *,
    id: str,
    created: int,
    email: str | None,
    name: str | None,
    description: str | None,
    phone: str | None,
    metadata: dict[str, str],
    invoice_prefix: str,
) -> dict[str, Any]:
    """Return a customer."""
    return {
        "id": id, "object": "customer", "address": None, "balance": 0, "created": created,
        "currency": None, "default_source": None, "delinquent": False, "description": description,
        "discount": None, "email": email, "invoice_prefix": invoice_prefix,
        "invoice_settings": {
            "custom_fields": None, "default_payment_method": None, "footer": None, "rendering_options": None,
        },
        "livemode": False, "metadata": metadata, "name": name, "next_invoice_sequence": 1,
        "phone": phone, "preferred_locales": [], "shipping": None, "tax_exempt": "none",
        "test_clock": None,
    }


def payment_method(
    *,
    id: str,
    created: int,
    brand: str,
    last4: str,
    exp_month: int,
    exp_year: int,
    fingerprint: str,
    funding: str,
    email: str | None,
    name: str | None,
) -> dict[str, Any]:
    """Return a card payment method, not yet attached to a customer."""
    return {
        "id": id, "object": "payment_method", "allow_redisplay": "unspecified",
        "billing_details": {"address": _address(), "email": email, "name": name, "phone": None, "tax_id": None},
        "card": {
            "brand": brand,
            "checks": {"address_line1_check": None, "address_postal_code_check": None, "cvc_check": "pass"},
            "country": "US", "display_brand": brand, "exp_month": exp_month, "exp_year": exp_year,
            "fingerprint": fingerprint, "funding": funding, "generated_from": None, "last4": last4,
            "networks": {"available": [brand], "preferred": None},
            "three_d_secure_usage": {"supported": True}, "wallet": None, "regulated_status": "unregulated",
        },
        "created": created, "customer": None, "customer_account": None, "livemode": False,
        "metadata": {}, "type": "card",
    }


def checkout_session(
    *,
    id: str,
    created: int,
    expires_at: int,
    mode: str,
    url: str,
    success_url: str,
    cancel_url: str | None,
    currency: str,
    amount_subtotal: int | None,
    amount_total: int | None,
    customer: str | None,
    customer_email: str | None,
    customer_creation: str | None,
    client_reference_id: str | None,
    metadata: dict[str, str],
    submit_type: str | None,
    locale: str | None,
    allow_promotion_codes: bool | None,
    billing_address_collection: str | None,
) -> dict[str, Any]:
    """Return an open Checkout Session."""
    return {
        "id": id, "object": "checkout.session", "adaptive_pricing": {"enabled": False},
        "after_expiration": None, "allow_promotion_codes": allow_promotion_codes,
        "amount_subtotal": amount_subtotal, "amount_total": amount_total,
        "automatic_tax": {"enabled": False, "liability": None, "provider": None, "status": None},
        "billing_address_collection": billing_address_collection, "cancel_url": cancel_url,
        "client_reference_id": client_reference_id, "client_secret": None,
        "collected_information": None, "consent": None, "consent_collection": None,
        "created": created, "currency": currency, "currency_conversion": None, "custom_fields": [],
        "custom_text": {"after_submit": None, "shipping_address": None, "submit": None,
                        "terms_of_service_acceptance": None},
        "customer": customer, "customer_account": None, "customer_creation": customer_creation,
        "customer_details": None if customer_email is None else {
            "address": None, "business_name": None, "email": customer_email, "individual_name": None,
            "name": None, "phone": None, "tax_exempt": "none", "tax_ids": None,
        },
        "customer_email": customer_email, "discounts": [], "expires_at": expires_at,
        "integration_identifier": None, "invoice": None,
        "invoice_creation": None if mode != "payment" else {
            "enabled": False,
            "invoice_data": {"account_tax_ids": None, "custom_fields": None, "description": None,
                             "footer": None, "issuer": None, "metadata": {}, "rendering_options": None},
        },
        "livemode": False, "locale": locale, "managed_payments": {"enabled": False},
        "metadata": metadata, "mode": mode, "origin_context": None, "payment_intent": None,
        "payment_link": None,
        "payment_method_collection": "always" if mode == "subscription" else None,
        "payment_method_configuration_details": None,
        "payment_method_options": {"card": {"request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"], "payment_status": "unpaid", "permissions": None,
        "phone_number_collection": {"enabled": False}, "recovered_from": None,
        "saved_payment_method_options": None, "setup_intent": None,
        "shipping_address_collection": None, "shipping_cost": None, "shipping_options": [],
        "status": "open", "submit_type": submit_type, "subscription": None, "success_url": success_url,
        "total_details": {"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
        "ui_mode": "hosted", "url": url, "wallet_options": None,
    }


def checkout_item(
    *, id: str, price_obj: dict[str, Any], quantity: int, amount: int, description: str
) -> dict[str, Any]:
    """Return one Checkout line item (``object: item``)."""
    return {
        "id": id, "object": "item", "adjustable_quantity": None, "amount_discount": 0,
        "amount_subtotal": amount, "amount_tax": 0, "amount_total": amount,
        "currency": price_obj["currency"], "description": description, "metadata": {},
        "price": price_obj, "quantity": quantity,
    }


def portal_session(
    *, id: str, created: int, customer: str, return_url: str | None, url: str, flow: dict[str, Any] | None,
    locale: str | None, configuration: str,
) -> dict[str, Any]:
    """Return a billing portal session."""
    return {
        "id": id, "object": "billing_portal.session", "configuration": configuration, "created": created,
        "customer": customer, "customer_account": None, "flow": flow, "livemode": False, "locale": locale,
        "on_behalf_of": None, "return_url": return_url, "url": url,
    }


def subscription_item(
    *, id: str, created: int, subscription: str, price_obj: dict[str, Any], quantity: int,
    period_start: int, period_end: int,
) -> dict[str, Any]:
    """Return a subscription item carrying the current period (the field moved here from the subscription)."""
    return {
        "id": id, "object": "subscription_item", "billing_thresholds": None, "created": created,
        "current_period_end": period_end, "current_period_start": period_start, "discounts": [],
        "metadata": {}, "plan": plan_from_price(price_obj), "price": price_obj, "quantity": quantity,
        "subscription": subscription, "tax_rates": [],
    }


def subscription(
    *,
    id: str,
    created: int,
    customer: str,
    currency: str,
    items: list[dict[str, Any]],
    metadata: dict[str, str],
    description: str | None,
    default_payment_method: str | None,
    billing_cycle_anchor: int,
) -> dict[str, Any]:
    """Return a subscription in status ``incomplete`` (Checkout makes it active once the first invoice is paid)."""
    return {
        "id": id, "object": "subscription", "application": None, "application_fee_percent": None,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None},
        "billing_cycle_anchor": billing_cycle_anchor, "billing_cycle_anchor_config": None,
        "billing_mode": {"flexible": None, "type": "classic"}, "billing_schedules": [],
        "billing_thresholds": None, "cancel_at": None, "cancel_at_period_end": False, "canceled_at": None,
        "cancellation_details": {"comment": None, "feedback": None, "reason": None},
        "collection_method": "charge_automatically", "created": created, "currency": currency,
        "customer": customer, "customer_account": None, "days_until_due": None,
        "default_payment_method": default_payment_method, "default_source": None, "default_tax_rates": [],
        "description": description, "discounts": [], "ended_at": None,
        "invoice_settings": {"account_tax_ids": None, "custom_fields": None, "description": None,
                             "footer": None, "issuer": {"type": "self"}},
        "items": _list(f"/v1/subscription_items?subscription={id}", items),
        "latest_invoice": None, "livemode": False, "managed_payments": {"enabled": False},
        "metadata": metadata, "next_pending_invoice_item_invoice": None, "on_behalf_of": None,
        "pause_collection": None,
        "payment_settings": {"payment_method_options": None, "payment_method_types": None,
                             "save_default_payment_method": "off"},
        "pending_invoice_item_interval": None, "pending_setup_intent": None, "pending_update": None,
        "schedule": None, "start_date": created, "status": "incomplete", "test_clock": None,
        "transfer_data": None, "trial_end": None,
        "trial_settings": {"end_behavior": {"missing_payment_method": "create_invoice"}},
        "trial_start": None,
    }


def invoice_line(
    *, id: str, invoice: str, subscription: str, subscription_item: str, price_obj: dict[str, Any],
    quantity: int, amount: int, description: str, period_start: int, period_end: int, proration: bool,
) -> dict[str, Any]:
    """Return one invoice line for a subscription item."""
    return {
        "id": id, "object": "line_item", "amount": amount, "currency": price_obj["currency"],
        "description": description, "discount_amounts": [], "discountable": True, "discounts": [],
        "invoice": invoice, "livemode": False, "metadata": {},
        "parent": {
            "invoice_item_details": None,
            "subscription_item_details": {
                "invoice_item": None, "proration": proration, "proration_details": {"credited_items": None},
                "subscription": subscription, "subscription_item": subscription_item,
            },
            "type": "subscription_item_details",
        },
        "period": {"end": period_end, "start": period_start}, "pretax_credit_amounts": [],
        "pricing": {
            "price_details": {"price": price_obj["id"], "product": price_obj["product"]},
            "type": "price_details", "unit_amount_decimal": price_obj["unit_amount_decimal"],
        },
        "quantity": quantity, "quantity_decimal": str(quantity), "subscription": subscription,
        "subtotal": amount, "taxes": [],
    }


def invoice(
    *,
    id: str,
    created: int,
    customer: dict[str, Any],
    currency: str,
    subscription: str,
    subscription_metadata: dict[str, str],
    billing_reason: str,
    lines: list[dict[str, Any]],
    period_start: int,
    period_end: int,
    default_payment_method: str | None,
    hosted_invoice_url: str,
) -> dict[str, Any]:
    """Return a draft subscription invoice; its subscription lives under ``parent.subscription_details``."""
    total = sum(line["amount"] for line in lines)
    return {
        "id": id, "object": "invoice", "account_country": "US", "account_name": "Herald (fake Stripe)",
        "account_tax_ids": None, "amount_due": total, "amount_overpaid": 0, "amount_paid": 0,
        "amount_remaining": total, "amount_shipping": 0, "application": None, "attempt_count": 0,
        "attempted": False, "auto_advance": True,
        "automatic_tax": {"disabled_reason": None, "enabled": False, "liability": None, "provider": None,
                          "status": None},
        "automatically_finalizes_at": None, "billing_reason": billing_reason,
        "collection_method": "charge_automatically", "created": created, "currency": currency,
        "custom_fields": None, "customer": customer["id"], "customer_account": None,
        "customer_address": None, "customer_email": customer["email"], "customer_name": customer["name"],
        "customer_phone": customer["phone"], "customer_shipping": None, "customer_tax_exempt": "none",
        "customer_tax_ids": [], "default_payment_method": default_payment_method, "default_source": None,
        "default_tax_rates": [], "description": None, "discounts": [], "due_date": None,
        "effective_at": None, "ending_balance": None, "footer": None, "from_invoice": None,
        "hosted_invoice_url": hosted_invoice_url, "invoice_pdf": None, "issuer": {"type": "self"},
        "last_finalization_error": None, "latest_revision": None,
        "lines": {**_list(f"/v1/invoices/{id}/lines", lines), "total_count": len(lines)},
        "livemode": False, "metadata": {}, "next_payment_attempt": None, "number": None,
        "on_behalf_of": None,
        "parent": {
            "quote_details": None,
            "subscription_details": {"metadata": subscription_metadata, "subscription": subscription},
            "type": "subscription_details",
        },
        "payment_settings": {"default_mandate": None, "payment_method_options": None,
                             "payment_method_types": None},
        "period_end": period_end, "period_start": period_start, "post_payment_credit_notes_amount": 0,
        "pre_payment_credit_notes_amount": 0, "receipt_number": None,
        "rendering": {"amount_tax_display": None, "pdf": {"page_size": "auto"}, "template": None,
                      "template_version": None},
        "shipping_cost": None, "shipping_details": None, "starting_balance": 0,
        "statement_descriptor": None, "status": "draft",
        "status_transitions": {"finalized_at": None, "marked_uncollectible_at": None, "paid_at": None,
                               "voided_at": None},
        # The 2025-03-31 API moved this to parent.subscription_details; Stripe's own example keeps
        # the key, so it is present but always null here, and code reading it finds nothing.
        "subscription": None,
        "subtotal": total, "subtotal_excluding_tax": total, "test_clock": None, "total": total,
        "total_discount_amounts": [], "total_excluding_tax": total, "total_pretax_credit_amounts": [],
        "total_taxes": [], "webhooks_delivered_at": None,
    }


def invoice_payment(
    *, id: str, created: int, invoice: str, payment_intent: str, amount: int, currency: str
) -> dict[str, Any]:
    """Return the link between an invoice and the payment intent that pays it."""
    return {
        "id": id, "object": "invoice_payment", "amount_paid": None, "amount_requested": amount,
        "created": created, "currency": currency, "invoice": invoice, "is_default": True, "livemode": False,
        "payment": {"payment_intent": payment_intent, "type": "payment_intent"}, "status": "open",
        "status_transitions": {"canceled_at": None, "paid_at": None},
    }


def payment_intent(
    *, id: str, created: int, amount: int, currency: str, customer: str | None, description: str | None,
    metadata: dict[str, str], receipt_email: str | None, client_secret: str,
) -> dict[str, Any]:
    """Return a payment intent waiting for a payment method."""
    return {
        "id": id, "object": "payment_intent", "amount": amount, "amount_capturable": 0,
        "amount_details": {"tip": {}}, "amount_received": 0, "application": None,
        "application_fee_amount": None, "automatic_payment_methods": None, "canceled_at": None,
        "cancellation_reason": None, "capture_method": "automatic", "client_secret": client_secret,
        "confirmation_method": "automatic", "created": created, "currency": currency, "customer": customer,
        "customer_account": None, "description": description, "excluded_payment_method_types": None,
        "last_payment_error": None, "latest_charge": None, "livemode": False,
        "managed_payments": {"enabled": False}, "metadata": metadata, "next_action": None,
        "on_behalf_of": None, "payment_method": None, "payment_method_configuration_details": None,
        "payment_method_options": {"card": {"installments": None, "mandate_options": None, "network": None,
                                            "request_three_d_secure": "automatic"}},
        "payment_method_types": ["card"], "processing": None, "receipt_email": receipt_email,
        "review": None, "setup_future_usage": None, "shipping": None, "source": None,
        "statement_descriptor": None, "statement_descriptor_suffix": None,
        "status": "requires_payment_method", "transfer_data": None, "transfer_group": None,
    }


def charge(
    *,
    id: str,
    created: int,
    pi: dict[str, Any],
    pm: dict[str, Any],
    succeeded: bool,
    failure_code: str | None,
    failure_message: str | None,
    decline_code: str | None,
    balance_transaction: str | None,
) -> dict[str, Any]:
    """Return a card charge made for a payment intent, succeeded or failed."""
    card = pm["card"]
    return {
        "id": id, "object": "charge", "amount": pi["amount"], "amount_captured": pi["amount"] if succeeded else 0,
        "amount_refunded": 0, "application": None, "application_fee": None, "application_fee_amount": None,
        "balance_transaction": balance_transaction, "billing_details": pm["billing_details"],
        "calculated_statement_descriptor": "HERALD", "captured": succeeded, "created": created,
        "currency": pi["currency"], "customer": pi["customer"], "description": pi["description"],
        "disputed": False, "failure_balance_transaction": None, "failure_code": failure_code,
        "failure_message": failure_message, "fraud_details": {}, "livemode": False,
        "metadata": dict(pi["metadata"]), "on_behalf_of": None,
        "outcome": {
            "advice_code": None, "network_advice_code": None, "network_decline_code": None,
            "network_status": "approved_by_network" if succeeded else "declined_by_network",
            "reason": None if succeeded else decline_code,
            "seller_message": "Payment complete." if succeeded else DECLINE_SELLER_MESSAGE,
            "type": "authorized" if succeeded else "issuer_declined",
        },
        "paid": succeeded, "payment_intent": pi["id"], "payment_method": pm["id"],
        "payment_method_details": {
            "card": {
                "amount_authorized": pi["amount"] if succeeded else None, "authorization_code": None,
                "brand": card["brand"],
                "checks": card["checks"], "country": card["country"], "exp_month": card["exp_month"],
                "exp_year": card["exp_year"], "extended_authorization": {"status": "disabled"},
                "fingerprint": card["fingerprint"], "funding": card["funding"],
                "incremental_authorization": {"status": "unavailable"}, "installments": None,
                "last4": card["last4"], "mandate": None, "multicapture": {"status": "unavailable"},
                "network": card["brand"], "network_token": {"used": False},
                "network_transaction_id": None,
                "overcapture": {"maximum_amount_capturable": pi["amount"], "status": "unavailable"},
                "regulated_status": "unregulated", "three_d_secure": None, "transaction_link_id": None,
                "wallet": None,
            },
            "type": "card",
        },
        "receipt_email": pi["receipt_email"], "receipt_number": None, "receipt_url": None,
        "refunded": False, "refunds": _list(f"/v1/charges/{id}/refunds"), "review": None,
        "shipping": None, "source": None, "source_transfer": None, "statement_descriptor": None,
        "statement_descriptor_suffix": None, "status": "succeeded" if succeeded else "failed",
        "transfer_data": None, "transfer_group": None,
    }


def refund(
    *, id: str, created: int, charge_obj: dict[str, Any], amount: int, reason: str | None, metadata: dict[str, str],
) -> dict[str, Any]:
    """Return a succeeded card refund."""
    return {
        "id": id, "object": "refund", "amount": amount, "balance_transaction": None,
        "charge": charge_obj["id"], "created": created, "currency": charge_obj["currency"],
        "customer": charge_obj["customer"], "customer_account": None,
        "destination_details": {"card": {"reference_status": "pending", "reference_type": "acquirer_reference_number",
                                         "type": "refund"}, "type": "card"},
        "metadata": metadata, "payment_intent": charge_obj["payment_intent"],
        "payment_method": charge_obj["payment_method"], "reason": reason, "receipt_number": None,
        "source_transfer_reversal": None, "status": "succeeded", "transfer_reversal": None,
    }


def dispute(*, id: str, created: int, charge_obj: dict[str, Any], reason: str) -> dict[str, Any]:
    """Return a dispute opened by the cardholder's bank, waiting for evidence."""
    evidence_keys = [
        "access_activity_log", "billing_address", "cancellation_policy", "cancellation_policy_disclosure",
        "cancellation_rebuttal", "customer_communication", "customer_email_address", "customer_name",
        "customer_purchase_ip", "customer_signature", "duplicate_charge_documentation",
        "duplicate_charge_explanation", "duplicate_charge_id", "product_description", "receipt",
        "refund_policy", "refund_policy_disclosure", "refund_refusal_explanation", "service_date",
        "service_documentation", "shipping_address", "shipping_carrier", "shipping_date",
        "shipping_documentation", "shipping_tracking_number", "uncategorized_file", "uncategorized_text",
    ]
    card = charge_obj["payment_method_details"]["card"]
    return {
        "id": id, "object": "dispute", "amount": charge_obj["amount"], "balance_transactions": [],
        "charge": charge_obj["id"], "created": created, "currency": charge_obj["currency"],
        "enhanced_eligibility_types": [],
        "evidence": {**{key: None for key in evidence_keys}, "enhanced_evidence": {}},
        "evidence_details": {"due_by": created + 21 * 86400, "enhanced_eligibility": {},
                             "has_evidence": False, "past_due": False, "submission_count": 0},
        "is_charge_refundable": False, "livemode": False, "metadata": {},
        "payment_intent": charge_obj["payment_intent"],
        "payment_method_details": {"card": {"brand": card["brand"], "case_type": "chargeback",
                                            "network": card["network"], "network_reason_code": "10.4"},
                                   "type": "card"},
        "reason": reason, "status": "needs_response",
    }


def event(
    *, id: str, created: int, type: str, data_object: dict[str, Any], previous_attributes: dict[str, Any] | None,
    request_id: str | None, idempotency_key: str | None, pending_webhooks: int,
) -> dict[str, Any]:
    """Return a snapshot event."""
    data: dict[str, Any] = {"object": data_object}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {
        "id": id, "object": "event", "api_version": API_VERSION, "created": created, "data": data,
        "livemode": False, "pending_webhooks": pending_webhooks,
        "request": {"id": request_id, "idempotency_key": idempotency_key}, "type": type,
    }
