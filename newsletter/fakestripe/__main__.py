"""Command line: serve the fake Stripe, or drive a running one (advance a subscription, open a dispute, flush)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from typing import Any

from newsletter.fakestripe.server import FakeStripeServer

DEFAULT_URL = "http://127.0.0.1:12111"


def _serve(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m newsletter.fakestripe",
        description="Serve Herald's local fake Stripe on 127.0.0.1. Client commands: advance, dispute, flush, reset.",
    )
    env = os.environ.get
    parser.add_argument("--port", type=int, default=int(env("FAKESTRIPE_PORT", "12111")))
    parser.add_argument("--db", default=env("FAKESTRIPE_DB", "var/fakestripe.sqlite3"),
                        help="SQLite file for the fake's state, or :memory:")
    parser.add_argument("--webhook-url", default=env("FAKESTRIPE_WEBHOOK_URL") or None,
                        help="where to deliver signed events, e.g. http://127.0.0.1:5000/webhooks/stripe")
    parser.add_argument("--webhook-secret", default=env("FAKESTRIPE_WEBHOOK_SECRET", "whsec_dev"))
    parser.add_argument("--seed", type=int, default=int(env("FAKESTRIPE_SEED")) if env("FAKESTRIPE_SEED") else None,
                        help="replay ids and delivery chaos exactly")
    parser.add_argument("--duplicate", type=float, default=0.0, help="probability of delivering an event twice")
    parser.add_argument("--delay", type=float, default=0.0, help="random delivery delay, up to this many seconds")
    parser.add_argument("--reorder", action="store_true", help="shuffle each batch of due deliveries")
    parser.add_argument("--dunning-retries", type=int, default=3)
    parser.add_argument("--dunning-final-action", choices=("canceled", "unpaid"), default="canceled")
    parser.add_argument("--verbose", action="store_true", help="log every HTTP request")
    args = parser.parse_args(argv)
    server = FakeStripeServer(
        args.db, webhook_url=args.webhook_url, webhook_secret=args.webhook_secret, seed=args.seed,
        port=args.port, quiet=not args.verbose, duplicate=args.duplicate, delay=args.delay, reorder=args.reorder,
        dunning_retries=args.dunning_retries, dunning_final_action=args.dunning_final_action,
    )
    server.start()
    print(f"fake Stripe on {server.url} (db {args.db}); webhooks to {args.webhook_url or 'nowhere'}; "
          f"seed {server.fake.delivery.seed}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


def _post(url: str, path: str, data: dict[str, Any]) -> tuple[int, Any]:
    if not url.startswith(("http://", "https://")):
        raise SystemExit(f"--url must be http(s): {url}")
    body = urllib.parse.urlencode(data).encode()
    request = urllib.request.Request(url.rstrip("/") + path, data=body, method="POST")  # noqa: S310 (checked)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read() or b"{}")


def _client(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m newsletter.fakestripe")
    parser.add_argument("--url", default=os.environ.get("FAKESTRIPE_URL", DEFAULT_URL))
    commands = parser.add_subparsers(dest="command", required=True)
    advance = commands.add_parser("advance", help="advance a subscription to its next renewal or retry")
    advance.add_argument("subscription")
    dispute = commands.add_parser("dispute", help="open a dispute on a charge")
    dispute.add_argument("charge")
    dispute.add_argument("--reason", default="fraudulent")
    commands.add_parser("flush", help="wait until queued webhooks are delivered")
    commands.add_parser("reset", help="forget all state")
    # Accept --url before or after the command.
    for sub in (advance, dispute, *commands.choices.values()):
        if "--url" not in sub._option_string_actions:
            sub.add_argument("--url", default=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.command == "advance":
        status, body = _post(args.url, "/_fake/advance", {"subscription": args.subscription})
    elif args.command == "dispute":
        status, body = _post(args.url, "/_fake/dispute", {"charge": args.charge, "reason": args.reason})
    elif args.command == "flush":
        status, body = _post(args.url, "/_fake/deliveries/flush", {})
    else:
        status, body = _post(args.url, "/_fake/reset", {})
    print(json.dumps(body, indent=2))
    return 0 if status == 200 else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if any(arg in ("advance", "dispute", "flush", "reset") for arg in argv[:3]):
        return _client(argv)
    return _serve(argv)


if __name__ == "__main__":
    sys.exit(main())
