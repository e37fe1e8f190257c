"""The fake Stripe's rules: catalogue, customers, Checkout, portal, subscriptions, invoices, payments, events."""

from __future__ import annotations

import random
import re
import string
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from newsletter.fakestripe import cards, objects
from newsletter.fakestripe.clock import SECONDS_PER_DAY, add_interval
from newsletter.fakestripe.errors import StripeAPIError, card_declined, invalid, missing, no_such
from newsletter.fakestripe.store import Store

_ALPHABET = string.ascii_letters + string.digits
# Subscription statuses after which nothing more happens to a subscription.
ENDED = ("canceled", "incomplete_expired")
# Stripe expires an unpaid first invoice's subscription after 23 hours.
INCOMPLETE_WINDOW = 23 * 3600
DEFAULT_PORTAL_CONFIGURATION = "bpc_fakestripe_default"
INACTIVE_PRICE = "The price specified is inactive. This field only accepts active prices."
NOT_ATTACHED = (
    "The customer does not have a payment method with the ID {}. The payment method must be attached to the customer."
)


@dataclass
class Settings:
    """Account-level billing settings (Stripe Dashboard > Billing > Revenue recovery)."""

    dunning_retries: int = 3
    dunning_final_action: str = "canceled"  # or "unpaid", as Stripe lets an account choose
    retry_every_days: int = 3

    def as_dict(self) -> dict[str, Any]:
        """Return the settings as plain values."""
        return asdict(self)


@dataclass
class CheckoutOutcome:
    """What the hosted checkout page does next: follow ``redirect`` or show ``error`` on the form."""

    redirect: str | None = None
    error: str | None = None


class Engine:
    """All state changes; callers hold no locks, every public method runs in one store transaction."""

    def __init__(
        self,
        store: Store,
        *,
        public_url: str,
        seed: int | None,
        settings: Settings,
        on_event: Callable[[dict[str, Any], float], None],
        webhooks_enabled: Callable[[], bool],
    ) -> None:
        self.store = store
        self.public_url = public_url
        self.settings = settings
        self.seed = seed
        self._on_event = on_event
        self._webhooks_enabled = webhooks_enabled
        self.context = threading.local()
        self._emitted: list[str] = []
        self._ids: random.Random = self._id_source()

    def _id_source(self) -> random.Random:
        # With a seed, ids repeat run after run, so a failing test replays with the same ids.
        return random.Random(f"ids/{self.seed}") if self.seed is not None else random.SystemRandom()

    def reset(self) -> None:
        """Forget everything and restart id generation."""
        with self.store.tx():
            self.store.reset()
            self._ids = self._id_source()
            self._emitted = []

    # -- plumbing ---------------------------------------------------------------------------

    def new_id(self, prefix: str, length: int = 24) -> str:
        """Return a fresh Stripe-style id."""
        with self.store.lock:
            return prefix + "".join(self._ids.choice(_ALPHABET) for _ in range(length))

    @staticmethod
    def now() -> int:
        """Return the wall-clock time in Unix seconds."""
        return int(time.time())

    def _sub_now(self, sub: dict[str, Any]) -> int:
        # A subscription advanced by the clock lives ahead of the wall clock, like a test clock.
        return max(self.now(), sub.get("_clock") or 0)

    def get(self, kind: str, object_id: str, label: str, *, param: str | None = None) -> dict[str, Any]:
        """Return a stored object or raise Stripe's "No such ..." error."""
        obj = self.store.get(object_id, kind) if isinstance(object_id, str) else None
        if obj is None or obj.get("_deleted") and kind != "customer":
            raise no_such(label, str(object_id), param=param)
        return obj

    def _live_customer(self, customer_id: str, *, param: str | None = None) -> dict[str, Any]:
        customer = self.get("customer", customer_id, "customer", param=param)
        if customer.get("_deleted"):
            raise no_such("customer", customer_id, param=param)
        return customer

    def render(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Return the object as the API shows it: internal fields dropped, nested prices current."""
        if obj.get("_deleted"):
            return {"id": obj["id"], "object": obj["object"], "deleted": True}
        out = {k: v for k, v in obj.items() if not k.startswith("_")}
        if out.get("object") == "subscription":
            items = []
            for item in out["items"]["data"]:
                current = self.store.get(item["price"]["id"], "price")
                if current is not None:
                    current = self.render(current)
                    item = {**item, "price": current, "plan": objects.plan_from_price(current)}
                items.append(item)
            out["items"] = {**out["items"], "data": items}
        return out

    def emit(self, event_type: str, obj: dict[str, Any], previous: dict[str, Any] | None = None) -> dict[str, Any]:
        """Record an event with a snapshot of ``obj`` and queue it for delivery once the transaction commits."""
        request_id = getattr(self.context, "request_id", None)
        idempotency_key = getattr(self.context, "idempotency_key", None)
        ev = objects.event(
            id=self.new_id("evt_"),
            created=self.now(),
            type=event_type,
            data_object=self.render(obj),
            previous_attributes=previous,
            request_id=request_id,
            idempotency_key=idempotency_key if request_id else None,
            pending_webhooks=1 if self._webhooks_enabled() else 0,
        )
        ev["_seq"] = self.store.next_counter("events")
        self.store.put(ev)
        self._emitted.append(event_type)
        if ev["pending_webhooks"]:
            # All events of one transaction share its commit time, so random delivery delays order
            # them the same way on every run with the same seed.
            self.store.after_commit(lambda: self._on_event(ev, self.store.committed_at))
        return ev

    def _emit_update(self, event_type: str, before: dict[str, Any], after: dict[str, Any]) -> None:
        old, new = self.render(before), self.render(after)
        previous = {k: old.get(k) for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)}
        if previous:
            self.emit(event_type, after, previous)

    def event_delivered(self, event_id: str, succeeded: bool) -> None:
        """Note the end of an event's delivery: Stripe counts it pending until an endpoint takes it."""
        with self.store.tx():
            ev = self.store.get(event_id, "event")
            if ev is None:
                return
            if succeeded:
                ev["pending_webhooks"] = 0
            ev["_delivery_failed"] = not succeeded
            self.store.put(ev)

    def paginate(self, items: list[dict[str, Any]], params: dict[str, Any], url: str) -> dict[str, Any]:
        """Return one page of a newest-first list, honouring limit, starting_after and ending_before."""
        created = params.get("created")
        if created:
            items = [i for i in items if _in_range(i.get("created", 0), created)]
        limit = params.get("limit") or 10
        ids = [i["id"] for i in items]
        if params.get("starting_after"):
            cursor = params["starting_after"]
            if cursor not in ids:
                raise no_such("object", cursor, param="starting_after")
            rest = items[ids.index(cursor) + 1 :]
            page, has_more = rest[:limit], len(rest) > limit
        elif params.get("ending_before"):
            cursor = params["ending_before"]
            if cursor not in ids:
                raise no_such("object", cursor, param="ending_before")
            rest = items[: ids.index(cursor)]
            page, has_more = rest[-limit:], len(rest) > limit
        else:
            page, has_more = items[:limit], len(items) > limit
        return {"object": "list", "data": [self.render(i) for i in page], "has_more": has_more, "url": url}

    # -- products and prices ----------------------------------------------------------------

    def create_product(self, p: dict[str, Any]) -> dict[str, Any]:
        """Create a product."""
        with self.store.tx():
            product_id = p.get("id") or self.new_id("prod_", 14)
            if self.store.get(product_id) is not None:
                raise invalid("id", f"Product already exists with that ID: '{product_id}'", "resource_already_exists")
            product = objects.product(
                id=product_id, created=self.now(), name=p["name"], description=p.get("description"),
                active=p.get("active", True), metadata=_clean(p.get("metadata")),
            )
            self.store.put(product)
            self.emit("product.created", product)
            return self.render(product)

    def update_product(self, product_id: str, p: dict[str, Any]) -> dict[str, Any]:
        """Update a product's name, description, active flag, default price or metadata."""
        with self.store.tx():
            before = self.get("product", product_id, "product")
            product = dict(before)
            for key in ("name", "description", "active"):
                if key in p:
                    product[key] = p[key]
            if "default_price" in p:
                if p["default_price"] is not None:
                    self.get("price", p["default_price"], "price", param="default_price")
                product["default_price"] = p["default_price"]
            if "metadata" in p:
                product["metadata"] = _merge_metadata(product["metadata"], p["metadata"])
            product["updated"] = self.now()
            self.store.put(product)
            self._emit_update("product.updated", before, product)
            return self.render(product)

    def list_products(self, p: dict[str, Any]) -> dict[str, Any]:
        """List products, newest first."""
        items = self.store.all("product")
        if p.get("active") is not None:
            items = [i for i in items if i["active"] == p["active"]]
        if p.get("ids"):
            items = [i for i in items if i["id"] in p["ids"]]
        return self.paginate(items, p, "/v1/products")

    def _price_from(self, p: dict[str, Any], path: str, *, active: bool) -> dict[str, Any]:
        """Build (not store) a price from create parameters or inline ``price_data``."""
        prefix = f"{path}[" if path else ""
        suffix = "]" if path else ""

        def name(key: str) -> str:
            return f"{prefix}{key}{suffix}"

        if p.get("product") and p.get("product_data"):
            raise invalid(name("product"), "You may only specify one of these parameters: product, product_data.")
        if p.get("product"):
            product = self.get("product", p["product"], "product", param=name("product"))
        elif p.get("product_data"):
            data = p["product_data"]
            product = objects.product(
                id=self.new_id("prod_", 14), created=self.now(), name=data["name"],
                description=data.get("description"), active=active, metadata=_clean(data.get("metadata")),
            )
            self.store.put(product)
        else:
            raise missing(name("product"))
        custom = p.get("custom_unit_amount")
        if custom and custom.get("enabled"):
            if p.get("unit_amount") is not None:
                raise invalid(
                    name("unit_amount"),
                    "You may only specify one of these parameters: custom_unit_amount, unit_amount.",
                )
            if p.get("recurring"):
                raise invalid(name("custom_unit_amount"), "custom_unit_amount is not supported for recurring prices.")
        elif p.get("unit_amount") is None:
            raise missing(name("unit_amount"))
        recurring = p.get("recurring")
        return objects.price(
            id=self.new_id("price_"), created=self.now(), product=product["id"],
            currency=p["currency"].lower(), unit_amount=p.get("unit_amount"),
            recurring=None if not recurring else {"interval": recurring["interval"],
                                                  "interval_count": recurring.get("interval_count") or 1},
            custom_unit_amount=custom if custom and custom.get("enabled") else None,
            lookup_key=p.get("lookup_key"), nickname=p.get("nickname"), metadata=_clean(p.get("metadata")),
            active=active, tax_behavior=p.get("tax_behavior") or "unspecified",
        )

    def _claim_lookup_key(self, price_id: str, lookup_key: str | None, transfer: bool) -> None:
        if not lookup_key:
            return
        for other in self.store.all("price"):
            if other["id"] != price_id and other["lookup_key"] == lookup_key:
                if not transfer:
                    raise invalid(
                        "lookup_key",
                        f"A price (`{other['id']}`) already uses that lookup key.",
                    )
                before = dict(other)
                other["lookup_key"] = None
                self.store.put(other)
                self._emit_update("price.updated", before, other)

    def create_price(self, p: dict[str, Any]) -> dict[str, Any]:
        """Create a price, moving its lookup key from another price when asked."""
        with self.store.tx():
            price = self._price_from(p, "", active=p.get("active", True))
            self._claim_lookup_key(price["id"], price["lookup_key"], bool(p.get("transfer_lookup_key")))
            self.store.put(price)
            self.emit("price.created", price)
            return self.render(price)

    def update_price(self, price_id: str, p: dict[str, Any]) -> dict[str, Any]:
        """Update a price's active flag, nickname, lookup key or metadata."""
        with self.store.tx():
            before = self.get("price", price_id, "price")
            price = dict(before)
            for key in ("active", "nickname"):
                if key in p:
                    price[key] = p[key]
            if "lookup_key" in p:
                self._claim_lookup_key(price_id, p["lookup_key"], bool(p.get("transfer_lookup_key")))
                price["lookup_key"] = p["lookup_key"]
            if "metadata" in p:
                price["metadata"] = _merge_metadata(price["metadata"], p["metadata"])
            self.store.put(price)
            self._emit_update("price.updated", before, price)
            return self.render(price)

    def list_prices(self, p: dict[str, Any]) -> dict[str, Any]:
        """List prices, newest first, filtered like Stripe's ``GET /v1/prices``."""
        items = self.store.all("price")
        if p.get("active") is not None:
            items = [i for i in items if i["active"] == p["active"]]
        for key in ("product", "currency", "type"):
            if p.get(key):
                items = [i for i in items if i[key] == p[key]]
        if p.get("lookup_keys"):
            items = [i for i in items if i["lookup_key"] in p["lookup_keys"]]
        interval = (p.get("recurring") or {}).get("interval")
        if interval:
            items = [i for i in items if i["recurring"] and i["recurring"]["interval"] == interval]
        return self.paginate(items, p, "/v1/prices")

    # -- customers ---------------------------------------------------------------------------

    def _new_customer(self, *, email: str | None, name: str | None, description: str | None = None,
                      phone: str | None = None, metadata: dict[str, str] | None = None) -> dict[str, Any]:
        customer = objects.customer(
            id=self.new_id("cus_", 14), created=self.now(), email=email, name=name, description=description,
            phone=phone, metadata=metadata or {},
            invoice_prefix="".join(self._ids.choice(string.ascii_uppercase + string.digits) for _ in range(8)),
        )
        self.store.put(customer)
        self.emit("customer.created", customer)
        return customer

    def create_customer(self, p: dict[str, Any]) -> dict[str, Any]:
        """Create a customer."""
        with self.store.tx():
            customer = self._new_customer(
                email=p.get("email"), name=p.get("name"), description=p.get("description"),
                phone=p.get("phone"), metadata=_clean(p.get("metadata")),
            )
            return self.render(customer)

    def update_customer(self, customer_id: str, p: dict[str, Any]) -> dict[str, Any]:
        """Update a customer's contact fields, metadata or default payment method."""
        with self.store.tx():
            before = self._live_customer(customer_id)
            customer = dict(before)
            for key in ("email", "name", "description", "phone"):
                if key in p:
                    customer[key] = p[key]
            if "metadata" in p:
                customer["metadata"] = _merge_metadata(customer["metadata"], p["metadata"])
            settings = p.get("invoice_settings") or {}
            if "default_payment_method" in settings:
                pm_id = settings["default_payment_method"]
                if pm_id is not None:
                    pm = self.get("payment_method", pm_id, "PaymentMethod",
                                  param="invoice_settings[default_payment_method]")
                    if pm["customer"] != customer_id:
                        raise invalid("invoice_settings[default_payment_method]", NOT_ATTACHED.format(pm_id))
                customer["invoice_settings"] = {**customer["invoice_settings"], "default_payment_method": pm_id}
            self.store.put(customer)
            self._emit_update("customer.updated", before, customer)
            return self.render(customer)

    def delete_customer(self, customer_id: str) -> dict[str, Any]:
        """Delete a customer, which cancels its subscriptions at once, as Stripe does."""
        with self.store.tx():
            customer = self._live_customer(customer_id)
            for sub in self.store.all("subscription"):
                if sub["customer"] == customer_id and sub["status"] not in ENDED:
                    self._end_subscription(sub, self._sub_now(sub), "cancellation_requested")
            self.emit("customer.deleted", customer)
            customer["_deleted"] = True
            self.store.put(customer)
            return self.render(customer)

    def list_customers(self, p: dict[str, Any]) -> dict[str, Any]:
        """List customers, newest first, optionally by exact email."""
        items = [c for c in self.store.all("customer") if not c.get("_deleted")]
        if p.get("email"):
            items = [c for c in items if c["email"] == p["email"]]
        return self.paginate(items, p, "/v1/customers")

    def search_customers(self, p: dict[str, Any]) -> dict[str, Any]:
        """Search customers with the ``field:'value'`` clauses of Stripe's search language (AND only)."""
        query = p["query"]
        clauses = re.split(r"\s+AND\s+", query.strip())
        tests: list[Callable[[dict[str, Any]], bool]] = []
        for clause in clauses:
            match = re.fullmatch(r"""(email|name|phone|metadata\[['"]([^'"]+)['"]\])\s*:\s*['"]([^'"]*)['"]""", clause)
            if not match:
                raise invalid(
                    "query", f"The fake Stripe understands only field:'value' clauses joined by AND; got {clause!r}."
                )
            field, meta_key, value = match.groups()
            if meta_key:
                tests.append(lambda c, k=meta_key, v=value: c["metadata"].get(k) == v)
            else:
                tests.append(lambda c, f=field, v=value: (c.get(f) or "").lower() == v.lower())
        items = [c for c in self.store.all("customer") if not c.get("_deleted") and all(t(c) for t in tests)]
        limit = p.get("limit") or 10
        page_token = p.get("page") or "0"
        if not page_token.isdigit():
            raise invalid("page", f"Invalid page token: {page_token}")
        offset = int(page_token)
        page = items[offset : offset + limit]
        more = len(items) > offset + limit
        return {
            "object": "search_result", "data": [self.render(c) for c in page], "has_more": more,
            "next_page": str(offset + limit) if more else None, "url": "/v1/customers/search",
        }

    # -- payment methods and payments -------------------------------------------------------------

    def _new_payment_method(self, number: str, *, email: str | None, name: str | None) -> dict[str, Any]:
        """Create a card payment method, or raise ``cards.CardProblem`` for a card Stripe refuses."""
        card = cards.check(number)
        digits = cards.normalise(number)
        pm = objects.payment_method(
            id=self.new_id("pm_"), created=self.now(), brand=card.brand, last4=digits[-4:], exp_month=12,
            exp_year=time.gmtime().tm_year + 5, fingerprint=cards.fingerprint(digits), funding=card.funding,
            email=email, name=name,
        )
        pm["_behaviour"] = card.behaviour
        self.store.put(pm)
        return pm

    def _attach(self, pm: dict[str, Any], customer: dict[str, Any]) -> None:
        pm["customer"] = customer["id"]
        self.store.put(pm)
        self.emit("payment_method.attached", pm)

    def _new_payment_intent(self, *, amount: int, currency: str, customer: str | None, description: str | None,
                            metadata: dict[str, str], receipt_email: str | None, created: int) -> dict[str, Any]:
        pi_id = self.new_id("pi_")
        pi = objects.payment_intent(
            id=pi_id, created=created, amount=amount, currency=currency, customer=customer,
            description=description, metadata=metadata, receipt_email=receipt_email,
            client_secret=f"{pi_id}_secret_{self.new_id('', 25)}",
        )
        self.store.put(pi)
        self.emit("payment_intent.created", pi)
        return pi

    def _confirm(self, pi: dict[str, Any], pm: dict[str, Any], *, on_session: bool, at: int) -> str:
        """Charge a payment intent with a card; return "succeeded", "failed" or "requires_action"."""
        pi["payment_method"] = pm["id"]
        behaviour = pm.get("_behaviour", "ok")
        if behaviour == "requires_action" and not on_session:
            # Off-session, the bank wants the cardholder: no charge until they authenticate.
            pi.update(
                status="requires_action",
                next_action={"type": "use_stripe_sdk", "use_stripe_sdk": {"type": "three_d_secure_redirect"}},
                last_payment_error={
                    "type": "card_error", "code": "authentication_required",
                    "decline_code": "authentication_required",
                    "message": cards.DECLINE_MESSAGES["authentication_required"],
                    "payment_method": self.render(pm),
                },
            )
            self.store.put(pi)
            self.emit("payment_intent.requires_action", pi)
            return "requires_action"
        succeeded = behaviour != "charge_fails"
        charge = objects.charge(
            id=self.new_id("ch_"), created=at, pi=pi, pm=self.render(pm), succeeded=succeeded,
            failure_code=None if succeeded else "card_declined",
            failure_message=None if succeeded else cards.DECLINE_MESSAGES["generic_decline"],
            decline_code=None if succeeded else "generic_decline",
            balance_transaction=self.new_id("txn_") if succeeded else None,
        )
        self.store.put(charge)
        pi["latest_charge"] = charge["id"]
        if succeeded:
            pi.update(status="succeeded", amount_received=pi["amount"], last_payment_error=None, next_action=None)
            self.store.put(pi)
            self.emit("charge.succeeded", charge)
            self.emit("payment_intent.succeeded", pi)
            return "succeeded"
        pi.update(
            status="requires_payment_method", next_action=None,
            last_payment_error={
                "type": "card_error", "code": "card_declined", "decline_code": "generic_decline",
                "charge": charge["id"], "message": cards.DECLINE_MESSAGES["generic_decline"],
                "payment_method": self.render(pm),
            },
        )
        self.store.put(pi)
        self.emit("charge.failed", charge)
        self.emit("payment_intent.payment_failed", pi)
        return "failed"

    # -- checkout ---------------------------------------------------------------------------------

    def create_checkout_session(self, p: dict[str, Any]) -> dict[str, Any]:
        """Create a hosted Checkout Session in ``payment`` or ``subscription`` mode."""
        with self.store.tx():
            mode = p["mode"]
            if mode == "setup":
                raise invalid("mode", "The fake Stripe does not model Checkout in setup mode.")
            if not p.get("success_url"):
                raise missing("success_url")
            if p.get("customer") and p.get("customer_email"):
                raise invalid("customer", "You may only specify one of these parameters: customer, customer_email.")
            customer = self._live_customer(p["customer"], param="customer") if p.get("customer") else None
            if mode == "subscription":
                for key in ("payment_intent_data", "customer_creation", "submit_type"):
                    if p.get(key) is not None and not (key == "submit_type" and p[key] in ("auto", "subscribe")):
                        raise invalid(key, f"`{key}` can only be used in `payment` mode.")
            elif p.get("subscription_data") is not None:
                raise invalid("subscription_data", "`subscription_data` can only be used in `subscription` mode.")
            line_items = p.get("line_items") or []
            if not line_items:
                raise missing("line_items")
            resolved = [self._checkout_line(li, i, mode) for i, li in enumerate(line_items)]
            currencies = {price["currency"] for price, _ in resolved}
            if len(currencies) > 1:
                raise invalid("line_items", "All prices on a Checkout Session must have the same currency.")
            custom = [price for price, _ in resolved if price["custom_unit_amount"]]
            if custom and len(resolved) > 1:
                raise invalid("line_items", "A price with custom_unit_amount must be the only line item.")
            total = None if custom else sum(price["unit_amount"] * qty for price, qty in resolved)
            now = self.now()
            expires_at = p.get("expires_at") or now + 24 * 3600
            if not now + 1800 <= expires_at <= now + 24 * 3600:
                raise invalid(
                    "expires_at",
                    "The `expires_at` timestamp must be between 30 minutes and 24 hours from Checkout Session "
                    "creation.",
                )
            session_id = "cs_test_a1" + self.new_id("", 56)
            session = objects.checkout_session(
                id=session_id, created=now, expires_at=expires_at, mode=mode,
                url=f"{self.public_url}/c/pay/{session_id}", success_url=p["success_url"],
                cancel_url=p.get("cancel_url"), currency=resolved[0][0]["currency"],
                amount_subtotal=total, amount_total=total,
                customer=customer["id"] if customer else None, customer_email=p.get("customer_email"),
                customer_creation=p.get("customer_creation")
                or ("if_required" if mode == "payment" and not customer else None),
                client_reference_id=p.get("client_reference_id"), metadata=_clean(p.get("metadata")),
                submit_type=p.get("submit_type"), locale=p.get("locale"),
                allow_promotion_codes=p.get("allow_promotion_codes"),
                billing_address_collection=p.get("billing_address_collection"),
            )
            session["_line_items"] = [
                {"id": self.new_id("li_"), "price": price["id"], "quantity": qty} for price, qty in resolved
            ]
            session["_subscription_data"] = p.get("subscription_data") or {}
            session["_payment_intent_data"] = p.get("payment_intent_data") or {}
            self.store.put(session)
            return self.render(session)

    def _checkout_line(self, li: dict[str, Any], index: int, mode: str) -> tuple[dict[str, Any], int]:
        path = f"line_items[{index}]"
        if li.get("price") and li.get("price_data"):
            raise invalid(path, "You may only specify one of these parameters: price, price_data.")
        if li.get("price"):
            price = self.get("price", li["price"], "price", param=f"{path}[price]")
            if not price["active"]:
                raise invalid(f"{path}[price]", INACTIVE_PRICE)
        elif li.get("price_data"):
            # Inline prices exist only for this session; Stripe creates them inactive.
            price = self._price_from(li["price_data"], f"{path}[price_data]", active=False)
            self.store.put(price)
        else:
            raise missing(f"{path}[price]")
        quantity = li.get("quantity")
        if quantity is None:
            raise missing(f"{path}[quantity]")
        if mode == "payment" and price["recurring"]:
            raise invalid(
                f"{path}[price]",
                "You specified `payment` mode but passed a recurring price. Either switch to `subscription` "
                "mode or use only one-time prices.",
            )
        if mode == "subscription" and not price["recurring"]:
            raise invalid(
                f"{path}[price]",
                "The fake Stripe models subscription-mode Checkout with recurring prices only.",
            )
        if price["custom_unit_amount"] and quantity != 1:
            raise invalid(f"{path}[quantity]", "A price with custom_unit_amount must have quantity 1.")
        return price, quantity

    def checkout_line_items(self, session_id: str, p: dict[str, Any]) -> dict[str, Any]:
        """List a session's line items as ``item`` objects."""
        session = self.get("checkout.session", session_id, "checkout.session")
        items = []
        for li in session["_line_items"]:
            price = self.render(self.get("price", li["price"], "price"))
            product = self.store.get(price["product"], "product") or {"name": ""}
            unit = price["unit_amount"] if price["unit_amount"] is not None else session["amount_total"] or 0
            items.append(objects.checkout_item(
                id=li["id"], price_obj=price, quantity=li["quantity"], amount=unit * li["quantity"],
                description=product["name"],
            ))
        return self.paginate(items, p, f"/v1/checkout/sessions/{session_id}/line_items")

    def list_checkout_sessions(self, p: dict[str, Any]) -> dict[str, Any]:
        """List Checkout Sessions, newest first."""
        items = self.store.all("checkout.session")
        for key in ("customer", "subscription", "payment_intent", "status"):
            if p.get(key):
                items = [s for s in items if s[key] == p[key]]
        return self.paginate(items, p, "/v1/checkout/sessions")

    def expire_checkout_session(self, session_id: str) -> dict[str, Any]:
        """Expire an open session so it can no longer be paid."""
        with self.store.tx():
            session = self.get("checkout.session", session_id, "checkout.session")
            if session["status"] != "open":
                raise invalid(
                    "session",
                    'Only Checkout Sessions with a status in ["open"] can be expired. '
                    f'This Checkout Session has a status of "{session["status"]}".',
                )
            self._expire(session)
            return self.render(session)

    def _expire(self, session: dict[str, Any]) -> None:
        session["status"] = "expired"
        session["url"] = None
        self.store.put(session)
        self.emit("checkout.session.expired", session)

    def checkout_view(self, session_id: str) -> dict[str, Any] | None:
        """Return what the hosted page shows for a session, expiring it first if its time has passed."""
        with self.store.tx():
            session = self.store.get(session_id, "checkout.session")
            if session is None:
                return None
            if session["status"] == "open" and self.now() > session["expires_at"]:
                self._expire(session)
            lines = []
            for li in session["_line_items"]:
                price = self.get("price", li["price"], "price")
                product = self.store.get(price["product"], "product") or {"name": "Item"}
                lines.append({"name": product["name"], "price": price, "quantity": li["quantity"]})
            email = session["customer_email"]
            if session["customer"]:
                email = (self.store.get(session["customer"], "customer") or {}).get("email") or email
            return {"session": session, "lines": lines, "email": email}

    def complete_checkout(self, session_id: str, *, email: str, name: str, card_number: str,
                          amount: str | None = None) -> CheckoutOutcome:
        """Pay a session from its hosted page; return where to go next or the error to show."""
        with self.store.tx():
            self.context.request_id = None
            session = self.get("checkout.session", session_id, "checkout.session")
            if session["status"] == "open" and self.now() > session["expires_at"]:
                self._expire(session)
            if session["status"] != "open":
                return CheckoutOutcome(error=f"This Checkout Session is {session['status']}.")
            customer = self.store.get(session["customer"], "customer") if session["customer"] else None
            email = (customer or {}).get("email") or email.strip()
            if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email or ""):
                return CheckoutOutcome(error="Your email address is invalid.")
            total = session["amount_total"]
            if total is None:
                parsed = _parse_amount(amount)
                if parsed is None:
                    return CheckoutOutcome(error="Enter an amount, for example 10.00.")
                price = self.get("price", session["_line_items"][0]["price"], "price")
                bounds = price["custom_unit_amount"] or {}
                if bounds.get("minimum") is not None and parsed < bounds["minimum"]:
                    return CheckoutOutcome(error=f"The minimum amount is {bounds['minimum'] / 100:.2f}.")
                if bounds.get("maximum") is not None and parsed > bounds["maximum"]:
                    return CheckoutOutcome(error=f"The maximum amount is {bounds['maximum'] / 100:.2f}.")
                total = parsed
            try:
                pm = self._new_payment_method(card_number, email=email, name=name or None)
            except cards.CardProblem as problem:
                return CheckoutOutcome(error=problem.message)
            if session["mode"] == "payment":
                return self._complete_payment(session, customer, pm, email, name, total)
            return self._complete_subscription(session, customer, pm, email, name)

    def _customer_details(self, email: str, name: str) -> dict[str, Any]:
        return {"address": None, "business_name": None, "email": email, "individual_name": None,
                "name": name or None, "phone": None, "tax_exempt": "none", "tax_ids": []}

    def _success(self, session: dict[str, Any]) -> CheckoutOutcome:
        return CheckoutOutcome(redirect=session["success_url"].replace("{CHECKOUT_SESSION_ID}", session["id"]))

    def _complete_payment(self, session: dict[str, Any], customer: dict[str, Any] | None, pm: dict[str, Any],
                          email: str, name: str, total: int) -> CheckoutOutcome:
        if customer is None and session["customer_creation"] == "always":
            customer = self._new_customer(email=email, name=name or None)
        now = self.now()
        intent_data = session["_payment_intent_data"]
        if session["payment_intent"]:
            # A declined attempt keeps its payment intent; the next card retries the same one.
            pi = self.get("payment_intent", session["payment_intent"], "payment_intent")
        else:
            pi = self._new_payment_intent(
                amount=total, currency=session["currency"], customer=customer["id"] if customer else None,
                description=intent_data.get("description"), metadata=_clean(intent_data.get("metadata")),
                receipt_email=email, created=now,
            )
            session["payment_intent"] = pi["id"]
        result = self._confirm(pi, pm, on_session=True, at=now)
        if result != "succeeded":
            self.store.put(session)
            return CheckoutOutcome(error=cards.DECLINE_MESSAGES["generic_decline"])
        session.update(
            status="complete", payment_status="paid", customer=customer["id"] if customer else None,
            customer_details=self._customer_details(email, name), amount_total=total, amount_subtotal=total,
            url=None,
        )
        self.store.put(session)
        self.emit("checkout.session.completed", session)
        return self._success(session)

    def _complete_subscription(self, session: dict[str, Any], customer: dict[str, Any] | None,
                               pm: dict[str, Any], email: str, name: str) -> CheckoutOutcome:
        if customer is None:
            customer = self._new_customer(email=email, name=name or None)
        self._attach(pm, customer)
        now = self.now()
        sub_data = session["_subscription_data"]
        sub_id = self.new_id("sub_")
        items = []
        first_price = None
        for li in session["_line_items"]:
            price = self.render(self.get("price", li["price"], "price"))
            first_price = first_price or price
            recurring = price["recurring"]
            items.append(objects.subscription_item(
                id=self.new_id("si_", 14), created=now, subscription=sub_id, price_obj=price,
                quantity=li["quantity"], period_start=now,
                period_end=add_interval(now, recurring["interval"], recurring["interval_count"], 1),
            ))
        assert first_price is not None  # sessions always have at least one line item
        sub = objects.subscription(
            id=sub_id, created=now, customer=customer["id"], currency=session["currency"], items=items,
            metadata=_clean(sub_data.get("metadata")), description=sub_data.get("description"),
            default_payment_method=pm["id"], billing_cycle_anchor=now,
        )
        invoice_id = self.new_id("in_")
        sub["latest_invoice"] = invoice_id
        self.store.put(sub)
        # Stripe creates Checkout's subscription as incomplete and activates it once the invoice is paid.
        self.emit("customer.subscription.created", sub)
        invoice = self._new_invoice(sub, customer, "subscription_create", at=now, period=(now, now),
                                    invoice_id=invoice_id)
        result = self._attempt_invoice(invoice, pm, on_session=True, at=now, next_attempt=None)
        if result == "paid":
            self._after_invoice_paid(invoice)
        session.update(
            status="complete", payment_status="paid" if result == "paid" else "unpaid",
            customer=customer["id"], customer_details=self._customer_details(email, name),
            subscription=sub["id"], invoice=invoice["id"], url=None,
        )
        self.store.put(session)
        self.emit("checkout.session.completed", session)
        return self._success(session)

    # -- invoices ------------------------------------------------------------------------------------

    def _new_invoice(self, sub: dict[str, Any], customer: dict[str, Any], reason: str, *, at: int,
                     period: tuple[int, int], amounts: dict[str, int] | None = None,
                     invoice_id: str | None = None) -> dict[str, Any]:
        """Create and finalize a subscription invoice (with its payment intent); return it open."""
        invoice_id = invoice_id or self.new_id("in_")
        lines = []
        for item in self.render(sub)["items"]["data"]:
            price = item["price"]
            amount = amounts[item["id"]] if amounts is not None else price["unit_amount"] * item["quantity"]
            product = self.store.get(price["product"], "product") or {"name": "Membership"}
            lines.append(objects.invoice_line(
                id=self.new_id("il_"), invoice=invoice_id, subscription=sub["id"], subscription_item=item["id"],
                price_obj=price, quantity=item["quantity"], amount=amount,
                description=(
                    f"{item['quantity']} × {product['name']} "
                    f"(at {price['unit_amount'] / 100:.2f} / {price['recurring']['interval']})"
                ),
                period_start=item["current_period_start"], period_end=item["current_period_end"],
                proration=reason == "subscription_update",
            ))
        invoice = objects.invoice(
            id=invoice_id, created=at, customer=customer, currency=sub["currency"], subscription=sub["id"],
            subscription_metadata=dict(sub["metadata"]), billing_reason=reason, lines=lines,
            period_start=period[0], period_end=period[1], default_payment_method=None,
            hosted_invoice_url=f"{self.public_url}/i/{invoice_id}",
        )
        self.store.put(invoice)
        self.emit("invoice.created", invoice)
        sequence = customer.get("next_invoice_sequence", 1)
        customer["next_invoice_sequence"] = sequence + 1
        self.store.put(customer)
        invoice.update(status="open", number=f"{customer['invoice_prefix']}-{sequence:04d}", effective_at=at)
        invoice["status_transitions"] = {**invoice["status_transitions"], "finalized_at": at}
        if invoice["amount_due"] > 0:
            description = {"subscription_create": "Subscription creation", "subscription_cycle": "Subscription update",
                           "subscription_update": "Subscription update"}[reason]
            pi = self._new_payment_intent(
                amount=invoice["amount_due"], currency=invoice["currency"], customer=customer["id"],
                description=description, metadata={}, receipt_email=None, created=at,
            )
            link = objects.invoice_payment(
                id=self.new_id("inpay_"), created=at, invoice=invoice_id, payment_intent=pi["id"],
                amount=invoice["amount_due"], currency=invoice["currency"],
            )
            self.store.put(link)
            invoice["_payment_intent"] = pi["id"]
            invoice["_invoice_payment"] = link["id"]
        self.store.put(invoice)
        self.emit("invoice.finalized", invoice)
        return invoice

    def _attempt_invoice(self, invoice: dict[str, Any], pm: dict[str, Any] | None, *, on_session: bool, at: int,
                         next_attempt: int | None) -> str:
        """Try to collect an open invoice; return "paid", "failed" or "requires_action"."""
        if invoice["amount_due"] == 0:
            self._mark_paid(invoice, at)
            return "paid"
        invoice["attempt_count"] += 1
        invoice["attempted"] = True
        pi = self.get("payment_intent", invoice["_payment_intent"], "payment_intent")
        result = "failed" if pm is None else self._confirm(pi, pm, on_session=on_session, at=at)
        if result == "succeeded":
            self._mark_paid(invoice, at)
            return "paid"
        invoice["next_payment_attempt"] = next_attempt
        self.store.put(invoice)
        self.emit("invoice.payment_failed", invoice)
        if result == "requires_action":
            self.emit("invoice.payment_action_required", invoice)
        return result

    def _mark_paid(self, invoice: dict[str, Any], at: int) -> None:
        invoice.update(status="paid", amount_paid=invoice["amount_due"], amount_remaining=0, next_payment_attempt=None)
        invoice["status_transitions"] = {**invoice["status_transitions"], "paid_at": at}
        if invoice.get("_invoice_payment"):
            link = self.get("invoice_payment", invoice["_invoice_payment"], "invoice_payment")
            link.update(status="paid", amount_paid=invoice["amount_due"])
            link["status_transitions"] = {**link["status_transitions"], "paid_at": at}
            self.store.put(link)
        self.store.put(invoice)
        self.emit("invoice.paid", invoice)
        self.emit("invoice.payment_succeeded", invoice)

    def _after_invoice_paid(self, invoice: dict[str, Any]) -> None:
        """A paid latest invoice brings an incomplete, past_due or unpaid subscription back to active."""
        sub = self.store.get(invoice["parent"]["subscription_details"]["subscription"], "subscription")
        if sub and sub["latest_invoice"] == invoice["id"] and sub["status"] in ("incomplete", "past_due", "unpaid"):
            before = dict(sub)
            sub["status"] = "active"
            self.store.put(sub)
            self._emit_update("customer.subscription.updated", before, sub)

    def pay_invoice(self, invoice_id: str, p: dict[str, Any]) -> tuple[dict[str, Any], StripeAPIError | None]:
        """Attempt an open invoice now (``POST /v1/invoices/:id/pay``); return it and any card error to answer."""
        with self.store.tx():
            invoice = self.get("invoice", invoice_id, "invoice")
            if invoice["status"] == "paid":
                raise invalid("invoice", "Invoice is already paid", "invoice_already_paid")
            if invoice["status"] != "open":
                raise invalid("invoice", f"You can only pay an open invoice; this invoice is {invoice['status']}.")
            customer = self._live_customer(invoice["customer"])
            if p.get("payment_method"):
                pm = self.get("payment_method", p["payment_method"], "PaymentMethod", param="payment_method")
            else:
                pm = self._default_payment_method(invoice, customer)
            result = self._attempt_invoice(invoice, pm, on_session=not p.get("off_session", True),
                                           at=self.now(), next_attempt=invoice["next_payment_attempt"])
            if result == "paid":
                self._after_invoice_paid(invoice)
                return self.render(invoice), None
            pi = self.render(self.get("payment_intent", invoice["_payment_intent"], "payment_intent"))
            return self.render(invoice), _decline_from(pi)

    def _default_payment_method(self, invoice: dict[str, Any], customer: dict[str, Any]) -> dict[str, Any] | None:
        sub = self.store.get(invoice["parent"]["subscription_details"]["subscription"], "subscription")
        pm_id = (sub or {}).get("default_payment_method") or customer["invoice_settings"]["default_payment_method"]
        return self.store.get(pm_id, "payment_method") if pm_id else None

    def invoice_view(self, invoice_id: str) -> dict[str, Any] | None:
        """Return what the hosted invoice page shows."""
        invoice = self.store.get(invoice_id, "invoice")
        if invoice is None:
            return None
        customer = self.store.get(invoice["customer"], "customer") or {}
        pm = self._default_payment_method(invoice, customer) if customer else None
        return {"invoice": invoice, "card": pm["card"] if pm else None}

    def pay_invoice_hosted(self, invoice_id: str, card_number: str | None) -> str | None:
        """Pay an invoice from its hosted page, on session; return an error to show, or None when paid."""
        with self.store.tx():
            self.context.request_id = None
            invoice = self.get("invoice", invoice_id, "invoice")
            if invoice["status"] != "open":
                return f"This invoice is {invoice['status']}."
            customer = self._live_customer(invoice["customer"])
            if card_number:
                try:
                    pm = self._new_payment_method(card_number, email=customer["email"], name=customer["name"])
                except cards.CardProblem as problem:
                    return problem.message
                self._attach(pm, customer)
            else:
                pm = self._default_payment_method(invoice, customer)
                if pm is None:
                    return "Enter a card to pay this invoice."
            result = self._attempt_invoice(invoice, pm, on_session=True, at=self.now(),
                                           next_attempt=invoice["next_payment_attempt"])
            if result != "paid":
                return cards.DECLINE_MESSAGES["generic_decline"]
            self._after_invoice_paid(invoice)
            return None

    def list_invoices(self, p: dict[str, Any]) -> dict[str, Any]:
        """List invoices, newest first."""
        items = self.store.all("invoice")
        for key in ("customer", "status"):
            if p.get(key):
                items = [i for i in items if i[key] == p[key]]
        if p.get("subscription"):
            items = [i for i in items if i["parent"]["subscription_details"]["subscription"] == p["subscription"]]
        return self.paginate(items, p, "/v1/invoices")

    def list_invoice_payments(self, p: dict[str, Any]) -> dict[str, Any]:
        """List the payments of invoices (the link from an invoice to its payment intent)."""
        items = self.store.all("invoice_payment")
        if p.get("invoice"):
            items = [i for i in items if i["invoice"] == p["invoice"]]
        pi = (p.get("payment") or {}).get("payment_intent")
        if pi:
            items = [i for i in items if i["payment"]["payment_intent"] == pi]
        return self.paginate(items, p, "/v1/invoice_payments")

    # -- subscriptions --------------------------------------------------------------------------------

    def list_subscriptions(self, p: dict[str, Any]) -> dict[str, Any]:
        """List subscriptions, newest first; without ``status`` canceled ones are left out, as in Stripe."""
        items = self.store.all("subscription")
        status = p.get("status")
        if status is None:
            items = [s for s in items if s["status"] != "canceled"]
        elif status == "ended":
            items = [s for s in items if s["status"] in ENDED]
        elif status != "all":
            items = [s for s in items if s["status"] == status]
        if p.get("customer"):
            items = [s for s in items if s["customer"] == p["customer"]]
        if p.get("price"):
            items = [s for s in items if any(i["price"]["id"] == p["price"] for i in s["items"]["data"])]
        return self.paginate(items, p, "/v1/subscriptions")

    def update_subscription(self, sub_id: str, p: dict[str, Any]) -> dict[str, Any]:
        """Update a subscription: cancellation at period end, metadata, payment method, price."""
        with self.store.tx():
            before = self.get("subscription", sub_id, "subscription")
            sub = dict(before)
            if sub["status"] in ENDED and set(p) - {"metadata", "cancellation_details", "expand"}:
                raise invalid(
                    next(iter(sorted(set(p) - {"metadata", "cancellation_details", "expand"}))),
                    "A canceled subscription can only update its cancellation_details and metadata.",
                )
            at = self._sub_now(sub)
            if "metadata" in p:
                sub["metadata"] = _merge_metadata(sub["metadata"], p["metadata"])
            if "description" in p:
                sub["description"] = p["description"]
            if "cancellation_details" in p:
                details = p["cancellation_details"] or {}
                sub["cancellation_details"] = {**sub["cancellation_details"], **details}
            if "default_payment_method" in p:
                pm_id = p["default_payment_method"]
                if pm_id is not None:
                    pm = self.get("payment_method", pm_id, "PaymentMethod", param="default_payment_method")
                    if pm["customer"] != sub["customer"]:
                        raise invalid("default_payment_method", NOT_ATTACHED.format(pm_id))
                sub["default_payment_method"] = pm_id
            period_end = sub["items"]["data"][0]["current_period_end"]
            if p.get("cancel_at_period_end") is True:
                sub.update(cancel_at_period_end=True, cancel_at=period_end, canceled_at=at)
                sub["cancellation_details"] = {**sub["cancellation_details"], "reason": "cancellation_requested"}
            elif p.get("cancel_at_period_end") is False or ("cancel_at" in p and p["cancel_at"] is None):
                sub.update(cancel_at_period_end=False, cancel_at=None, canceled_at=None)
                sub["cancellation_details"] = {**sub["cancellation_details"], "reason": None}
            if p.get("cancel_at") is not None:
                if p["cancel_at"] <= at:
                    raise invalid("cancel_at", "cancel_at must be in the future.")
                sub.update(cancel_at=p["cancel_at"], cancel_at_period_end=p["cancel_at"] == period_end, canceled_at=at)
                sub["cancellation_details"] = {**sub["cancellation_details"], "reason": "cancellation_requested"}
            failure: StripeAPIError | None = None
            if p.get("items"):
                failure = self._change_items(sub, p, at)
            if failure is not None:
                raise failure
            self.store.put(sub)
            self._emit_update("customer.subscription.updated", before, sub)
            return self.render(sub)

    def _change_items(self, sub: dict[str, Any], p: dict[str, Any], at: int) -> StripeAPIError | None:
        """Apply price or quantity changes; bill at once when the interval changes or when asked to."""
        behaviour = p.get("payment_behavior") or "allow_incomplete"
        if behaviour not in ("allow_incomplete", "error_if_incomplete"):
            raise invalid(
                "payment_behavior",
                "The fake Stripe models payment_behavior allow_incomplete and error_if_incomplete only, "
                f"not {behaviour}.",
            )
        proration = p.get("proration_behavior") or "create_prorations"
        items = [dict(i) for i in sub["items"]["data"]]
        by_id = {i["id"]: i for i in items}
        interval_changed = False
        credits: dict[str, int] = {}
        for index, change in enumerate(p["items"]):
            path = f"items[{index}]"
            if not change.get("id"):
                raise invalid(
                    f"{path}[id]", "The fake Stripe changes existing subscription items only; pass items[][id]."
                )
            if change.get("deleted"):
                raise invalid(f"{path}[deleted]", "The fake Stripe does not model removing subscription items.")
            item = by_id.get(change["id"])
            if item is None:
                raise no_such("subscription item", change["id"], param=f"{path}[id]")
            old_price = item["price"]
            old_quantity = item["quantity"]
            new_price = old_price
            if change.get("price"):
                new_price = self.render(self.get("price", change["price"], "price", param=f"{path}[price]"))
                if not new_price["active"]:
                    raise invalid(f"{path}[price]", INACTIVE_PRICE)
                if not new_price["recurring"]:
                    raise invalid(
                        f"{path}[price]",
                        "The price specified is not recurring; subscription items need recurring prices.",
                    )
                if new_price["currency"] != sub["currency"]:
                    raise invalid(f"{path}[price]", "The price's currency must match the subscription's currency.")
            quantity = change["quantity"] if change.get("quantity") is not None else old_quantity
            start, end = item["current_period_start"], item["current_period_end"]
            unused = max(0.0, min(1.0, (end - at) / (end - start))) if end > start else 0.0
            old_total, new_total = old_price["unit_amount"] * old_quantity, new_price["unit_amount"] * quantity
            changed_interval = (old_price["recurring"]["interval"], old_price["recurring"]["interval_count"]) != (
                new_price["recurring"]["interval"], new_price["recurring"]["interval_count"])
            if changed_interval:
                # A new interval resets the billing date and bills the new price now, less unused time.
                interval_changed = True
                credit = 0 if proration == "none" else round(old_total * unused)
                credits[item["id"]] = max(0, new_total - credit)
                recurring = new_price["recurring"]
                item.update(current_period_start=at,
                            current_period_end=add_interval(at, recurring["interval"], recurring["interval_count"], 1))
            else:
                credits[item["id"]] = max(0, round((new_total - old_total) * unused)) if proration != "none" else 0
            item.update(price=new_price, plan=objects.plan_from_price(new_price), quantity=quantity)
        immediate = interval_changed or proration == "always_invoice"
        sub["items"] = {**sub["items"], "data": items}
        if interval_changed:
            sub["billing_cycle_anchor"] = at
            if sub["cancel_at_period_end"]:
                sub["cancel_at"] = items[0]["current_period_end"]
        if not immediate or sum(credits.values()) == 0:
            return None
        customer = self._live_customer(sub["customer"])
        amounts = {item_id: credits.get(item_id, 0) for item_id in by_id}
        invoice = self._new_invoice(sub, customer, "subscription_update", at=at, period=(at, at), amounts=amounts)
        pm_id = sub["default_payment_method"] or customer["invoice_settings"]["default_payment_method"]
        pm = self.store.get(pm_id, "payment_method") if pm_id else None
        result = self._attempt_invoice(invoice, pm, on_session=False, at=at,
                                       next_attempt=at + self.settings.retry_every_days * SECONDS_PER_DAY)
        if result == "paid":
            sub["latest_invoice"] = invoice["id"]
            return None
        if behaviour == "error_if_incomplete":
            pi = self.render(self.get("payment_intent", invoice["_payment_intent"], "payment_intent"))
            # Stripe leaves the subscription as it was; the whole update is undone with the transaction.
            return _decline_from(pi)
        sub["latest_invoice"] = invoice["id"]
        sub["status"] = "past_due"
        return None

    def cancel_subscription(self, sub_id: str, p: dict[str, Any]) -> dict[str, Any]:
        """Cancel a subscription at once (``DELETE /v1/subscriptions/:id``)."""
        with self.store.tx():
            sub = self.get("subscription", sub_id, "subscription")
            if sub["status"] in ENDED:
                raise invalid("subscription", f"This subscription has already been canceled: '{sub_id}'.")
            details = p.get("cancellation_details") or {}
            if details:
                sub["cancellation_details"] = {**sub["cancellation_details"], **details}
            self._end_subscription(sub, self._sub_now(sub), "cancellation_requested")
            return self.render(sub)

    def _end_subscription(self, sub: dict[str, Any], at: int, reason: str) -> None:
        if sub["status"] == "incomplete":
            self._void_latest(sub, at)
        sub.update(status="canceled", ended_at=at, canceled_at=sub["canceled_at"] or at)
        sub["cancellation_details"] = {**sub["cancellation_details"], "reason": reason}
        self.store.put(sub)
        self.emit("customer.subscription.deleted", sub)

    def _void_latest(self, sub: dict[str, Any], at: int) -> None:
        invoice = self.store.get(sub["latest_invoice"] or "", "invoice")
        if invoice and invoice["status"] == "open":
            invoice.update(status="void", amount_remaining=0, next_payment_attempt=None)
            invoice["status_transitions"] = {**invoice["status_transitions"], "voided_at": at}
            self.store.put(invoice)
            self.emit("invoice.voided", invoice)

    # -- the clock ---------------------------------------------------------------------------------------

    def advance(self, sub_id: str) -> dict[str, Any]:
        """Move one subscription to its next billing moment, like a Stripe test clock, and apply what happens."""
        with self.store.tx():
            self.context.request_id = None
            sub = self.get("subscription", sub_id, "subscription", param="subscription")
            start = len(self._emitted)
            status = sub["status"]
            invoice: dict[str, Any] | None = None
            if status in ENDED:
                raise invalid("subscription", f"The subscription has ended ({status}); there is nothing to advance to.")
            if status == "unpaid":
                raise invalid(
                    "subscription",
                    "The subscription is unpaid: Stripe stops retrying; pay its open invoice on the hosted invoice "
                    "page to reactivate it.",
                )
            if status == "incomplete":
                at = sub["created"] + INCOMPLETE_WINDOW
                before = dict(sub)
                self._void_latest(sub, at)
                sub.update(status="incomplete_expired", ended_at=at, _clock=at)
                self.store.put(sub)
                self._emit_update("customer.subscription.updated", before, sub)
            elif status == "past_due":
                invoice = self._retry(sub)
            else:
                period_end = sub["items"]["data"][0]["current_period_end"]
                if sub["cancel_at"] is not None and sub["cancel_at"] <= period_end:
                    sub["_clock"] = sub["cancel_at"]
                    self._end_subscription(sub, sub["cancel_at"], "cancellation_requested")
                else:
                    invoice = self._renew(sub, period_end)
            sub = self.get("subscription", sub_id, "subscription")
            return {
                "subscription": self.render(sub),
                "invoice": self.render(invoice) if invoice else None,
                "events": self._emitted[start:],
            }

    def _renew(self, sub: dict[str, Any], at: int) -> dict[str, Any]:
        before = dict(sub)
        items = []
        for item in sub["items"]["data"]:
            recurring = item["price"]["recurring"]
            periods = _periods_since(sub["billing_cycle_anchor"], at, recurring)
            items.append({**item, "current_period_start": at, "current_period_end": add_interval(
                sub["billing_cycle_anchor"], recurring["interval"], recurring["interval_count"], periods + 1)})
        old_period = (sub["items"]["data"][0]["current_period_start"], at)
        sub["items"] = {**sub["items"], "data": items}
        sub["_clock"] = at
        customer = self._live_customer(sub["customer"])
        invoice = self._new_invoice(sub, customer, "subscription_cycle", at=at, period=old_period)
        sub["latest_invoice"] = invoice["id"]
        self.store.put(sub)
        self._emit_update("customer.subscription.updated", before, sub)
        pm = self._default_payment_method(invoice, customer)
        retries = self.settings.dunning_retries
        next_attempt = at + self.settings.retry_every_days * SECONDS_PER_DAY if retries > 0 else None
        result = self._attempt_invoice(invoice, pm, on_session=False, at=at, next_attempt=next_attempt)
        if result != "paid":
            self._payment_failed(sub, invoice, at)
        return invoice

    def _retry(self, sub: dict[str, Any]) -> dict[str, Any]:
        invoice = self.get("invoice", sub["latest_invoice"], "invoice")
        if invoice["status"] != "open":
            raise invalid("subscription", "The subscription is past_due but its latest invoice is not open.")
        at = invoice["next_payment_attempt"] or self._sub_now(sub) + self.settings.retry_every_days * SECONDS_PER_DAY
        sub["_clock"] = at
        self.store.put(sub)
        customer = self._live_customer(sub["customer"])
        pm = self._default_payment_method(invoice, customer)
        # attempt_count counts the first try too, so retries are exhausted after 1 + dunning_retries attempts.
        more = invoice["attempt_count"] + 1 <= self.settings.dunning_retries
        next_attempt = at + self.settings.retry_every_days * SECONDS_PER_DAY if more else None
        result = self._attempt_invoice(invoice, pm, on_session=False, at=at, next_attempt=next_attempt)
        if result == "paid":
            self._after_invoice_paid(invoice)
        else:
            self._payment_failed(sub, invoice, at)
        return invoice

    def _payment_failed(self, sub: dict[str, Any], invoice: dict[str, Any], at: int) -> None:
        """Move the subscription along Stripe's dunning: past_due, then canceled or unpaid when retries run out."""
        sub = self.get("subscription", sub["id"], "subscription")
        if invoice["next_payment_attempt"] is not None:
            if sub["status"] != "past_due":
                before = dict(sub)
                sub["status"] = "past_due"
                self.store.put(sub)
                self._emit_update("customer.subscription.updated", before, sub)
            return
        invoice["auto_advance"] = False
        self.store.put(invoice)
        if self.settings.dunning_final_action == "unpaid":
            before = dict(sub)
            sub["status"] = "unpaid"
            self.store.put(sub)
            self._emit_update("customer.subscription.updated", before, sub)
        else:
            self._end_subscription(sub, at, "payment_failed")

    # -- portal --------------------------------------------------------------------------------------

    def create_portal_session(self, p: dict[str, Any]) -> dict[str, Any]:
        """Create a customer portal session."""
        with self.store.tx():
            customer = self._live_customer(p["customer"], param="customer")
            flow = None
            flow_data = p.get("flow_data")
            if flow_data:
                kind = flow_data["type"]
                if kind not in ("payment_method_update", "subscription_cancel"):
                    raise invalid(
                        "flow_data[type]",
                        "The fake Stripe models portal flows payment_method_update and subscription_cancel, "
                        f"not {kind}.",
                    )
                target = None
                if kind == "subscription_cancel":
                    target = (flow_data.get("subscription_cancel") or {}).get("subscription")
                    if not target:
                        raise missing("flow_data[subscription_cancel][subscription]")
                    self.get("subscription", target, "subscription",
                             param="flow_data[subscription_cancel][subscription]")
                after = flow_data.get("after_completion") or {"type": "portal_homepage"}
                flow = {
                    "after_completion": {
                        "hosted_confirmation": after.get("hosted_confirmation"),
                        "redirect": after.get("redirect"),
                        "type": after.get("type", "portal_homepage"),
                    },
                    "subscription_cancel": {"retention": None, "subscription": target} if target else None,
                    "subscription_update": None, "subscription_update_confirm": None, "type": kind,
                }
            session_id = self.new_id("bps_")
            session = objects.portal_session(
                id=session_id, created=self.now(), customer=customer["id"], return_url=p.get("return_url"),
                url=f"{self.public_url}/p/session/{session_id}", flow=flow, locale=p.get("locale"),
                configuration=p.get("configuration") or DEFAULT_PORTAL_CONFIGURATION,
            )
            self.store.put(session)
            return self.render(session)

    def portal_view(self, session_id: str) -> dict[str, Any] | None:
        """Return what the portal page shows: the customer's card, subscriptions and open invoices."""
        session = self.store.get(session_id, "billing_portal.session")
        if session is None:
            return None
        customer = self.store.get(session["customer"], "customer") or {}
        subs = [self.render(s) for s in self.store.all("subscription")
                if s["customer"] == session["customer"] and s["status"] not in ENDED]
        pm_id = customer.get("invoice_settings", {}).get("default_payment_method") or next(
            (s["default_payment_method"] for s in subs if s["default_payment_method"]), None)
        pm = self.store.get(pm_id, "payment_method") if pm_id else None
        rows = []
        for sub in subs:
            item = sub["items"]["data"][0]
            product = self.store.get(item["price"]["product"], "product") or {"name": "Membership"}
            latest = self.store.get(sub["latest_invoice"] or "", "invoice")
            rows.append({"sub": sub, "item": item, "product": product,
                         "open_invoice": latest if latest and latest["status"] == "open" else None})
        return {"session": session, "customer": customer, "card": pm["card"] if pm else None, "rows": rows}

    def _portal_subscription(self, session_id: str, sub_id: str) -> dict[str, Any]:
        session = self.get("billing_portal.session", session_id, "billing_portal.session")
        sub = self.get("subscription", sub_id, "subscription")
        if sub["customer"] != session["customer"]:
            raise no_such("subscription", sub_id)
        return sub

    def portal_update_card(self, session_id: str, card_number: str) -> str | None:
        """Replace the customer's card from the portal; return an error to show, or None."""
        with self.store.tx():
            self.context.request_id = None
            session = self.get("billing_portal.session", session_id, "billing_portal.session")
            customer = self._live_customer(session["customer"])
            try:
                pm = self._new_payment_method(card_number, email=customer["email"], name=customer["name"])
            except cards.CardProblem as problem:
                return problem.message
            self._attach(pm, customer)
            before = dict(customer)
            customer["invoice_settings"] = {**customer["invoice_settings"], "default_payment_method": pm["id"]}
            self.store.put(customer)
            self._emit_update("customer.updated", before, customer)
            for sub in self.store.all("subscription"):
                if sub["customer"] == customer["id"] and sub["status"] not in ENDED:
                    before_sub = dict(sub)
                    sub["default_payment_method"] = pm["id"]
                    self.store.put(sub)
                    self._emit_update("customer.subscription.updated", before_sub, sub)
            return None

    def portal_cancel(self, session_id: str, sub_id: str, *, now: bool) -> None:
        """Cancel from the portal: at the end of the period, or at once."""
        self.context.request_id = None
        self._portal_subscription(session_id, sub_id)
        if now:
            self.cancel_subscription(sub_id, {})
        else:
            self.update_subscription(sub_id, {"cancel_at_period_end": True})

    def portal_renew(self, session_id: str, sub_id: str) -> None:
        """Undo a cancellation at period end from the portal."""
        self.context.request_id = None
        self._portal_subscription(session_id, sub_id)
        self.update_subscription(sub_id, {"cancel_at_period_end": False})

    # -- refunds, disputes, events --------------------------------------------------------------------

    def create_refund(self, p: dict[str, Any]) -> dict[str, Any]:
        """Refund a succeeded charge, in full or in part."""
        with self.store.tx():
            if not p.get("charge") and not p.get("payment_intent"):
                raise missing("charge")
            if p.get("payment_intent"):
                pi = self.get("payment_intent", p["payment_intent"], "payment_intent", param="payment_intent")
                if pi["status"] != "succeeded" or not pi["latest_charge"]:
                    raise invalid(
                        "payment_intent",
                        f"This PaymentIntent ({pi['id']}) does not have a successful charge to refund.",
                    )
                if p.get("charge") and p["charge"] != pi["latest_charge"]:
                    raise invalid("charge", "The charge does not belong to the PaymentIntent.")
                charge_id = pi["latest_charge"]
            else:
                charge_id = p["charge"]
            charge = self.get("charge", charge_id, "charge", param="charge")
            if charge["status"] != "succeeded":
                raise invalid("charge", f"Charge {charge_id} has not succeeded; there is nothing to refund.")
            remaining = charge["amount"] - charge["amount_refunded"]
            if remaining <= 0:
                raise invalid("charge", f"Charge {charge_id} has already been refunded.", "charge_already_refunded")
            amount = p.get("amount") if p.get("amount") is not None else remaining
            if amount > remaining:
                raise invalid(
                    "amount",
                    f"Refund amount ({amount / 100:.2f}) is greater than unrefunded amount on charge "
                    f"({remaining / 100:.2f})",
                    "amount_too_large",
                )
            refund = objects.refund(
                id=self.new_id("re_"), created=self.now(), charge_obj=charge, amount=amount,
                reason=p.get("reason"), metadata=_clean(p.get("metadata")),
            )
            self.store.put(refund)
            charge["amount_refunded"] += amount
            charge["refunded"] = charge["amount_refunded"] == charge["amount"]
            charge["refunds"] = {**charge["refunds"], "data": [self.render(refund), *charge["refunds"]["data"]]}
            self.store.put(charge)
            self.emit("refund.created", refund)
            self.emit("charge.refunded", charge)
            return self.render(refund)

    def list_refunds(self, p: dict[str, Any]) -> dict[str, Any]:
        """List refunds, newest first."""
        items = self.store.all("refund")
        for key in ("charge", "payment_intent"):
            if p.get(key):
                items = [r for r in items if r[key] == p[key]]
        return self.paginate(items, p, "/v1/refunds")

    def create_dispute(self, charge_id: str, reason: str) -> dict[str, Any]:
        """Open a dispute on a succeeded charge, as the cardholder's bank would."""
        with self.store.tx():
            self.context.request_id = None
            charge = self.get("charge", charge_id, "charge", param="charge")
            if charge["status"] != "succeeded":
                raise invalid("charge", f"Charge {charge_id} has not succeeded; it cannot be disputed.")
            if charge["disputed"]:
                raise invalid("charge", f"Charge {charge_id} is already disputed.")
            dispute = objects.dispute(id=self.new_id("dp_"), created=self.now(), charge_obj=charge, reason=reason)
            self.store.put(dispute)
            charge["disputed"] = True
            self.store.put(charge)
            self.emit("charge.dispute.created", dispute)
            return self.render(dispute)

    def list_events(self, p: dict[str, Any]) -> dict[str, Any]:
        """List events, newest first, by type (``x.*`` wildcards), types[] or delivery success."""
        items = sorted(self.store.all("event"), key=lambda e: e["_seq"], reverse=True)
        if p.get("type"):
            items = [e for e in items if _type_matches(e["type"], p["type"])]
        if p.get("types"):
            items = [e for e in items if any(_type_matches(e["type"], t) for t in p["types"])]
        if p.get("delivery_success") is not None:
            items = [e for e in items if (e["pending_webhooks"] == 0) == p["delivery_success"]]
        return self.paginate(items, p, "/v1/events")


def _decline_from(pi: dict[str, Any]) -> StripeAPIError:
    """Return the 402 card error for a payment intent's last failed attempt."""
    error = pi["last_payment_error"] or {}
    return card_declined(
        error.get("message") or cards.DECLINE_MESSAGES["generic_decline"], code=error.get("code", "card_declined"),
        decline_code=error.get("decline_code"), charge=error.get("charge"), payment_intent=pi,
    )


def _type_matches(event_type: str, pattern: str) -> bool:
    if pattern.endswith("*"):
        return event_type.startswith(pattern[:-1])
    return event_type == pattern


def _in_range(value: int, bounds: dict[str, int | None]) -> bool:
    checks = {
        "eq": lambda b: value == b, "gt": lambda b: value > b, "gte": lambda b: value >= b,
        "lt": lambda b: value < b, "lte": lambda b: value <= b,
    }
    return all(checks[op](bound) for op, bound in bounds.items() if bound is not None)


def _clean(metadata: dict[str, str | None] | None) -> dict[str, str]:
    """Drop keys sent empty (they mean "unset") from metadata given at creation."""
    return {k: v for k, v in (metadata or {}).items() if v is not None}


def _merge_metadata(current: dict[str, str], changes: dict[str, str | None]) -> dict[str, str]:
    """Apply a metadata update: ``{}`` (sent as ``metadata=``) clears all, an empty value removes a key."""
    if not changes:
        return {}
    merged = dict(current)
    for key, value in changes.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = value
    return merged


def _parse_amount(text: str | None) -> int | None:
    """Read "12", "12.5" or "12.50" typed on the page as minor units."""
    match = re.fullmatch(r"\s*(\d{1,7})(?:[.,](\d{1,2}))?\s*", text or "")
    if not match:
        return None
    whole, cents = match.groups()
    return int(whole) * 100 + int((cents or "0").ljust(2, "0"))


def _periods_since(anchor: int, at: int, recurring: dict[str, Any]) -> int:
    """Return how many whole intervals lie between the billing anchor and ``at``."""
    periods = 0
    while add_interval(anchor, recurring["interval"], recurring["interval_count"], periods + 1) <= at:
        periods += 1
    return periods
