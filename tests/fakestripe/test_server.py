"""Running the fake: loopback only, state in SQLite across restarts, reset, concurrency, the command line."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import stripe

from newsletter.billing.gateway import StripeGateway
from newsletter.fakestripe import FakeStripeServer
from newsletter.fakestripe.__main__ import main as cli_main
from tests.fakestripe.support import API_KEY, SECRET, Receiver, api, wait_until


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_server_listens_on_loopback_only(fake: FakeStripeServer) -> None:
    assert fake.url.startswith("http://127.0.0.1:")
    assert fake._server is not None and fake._server.server_address[0] == "127.0.0.1"


def test_state_survives_a_restart_with_a_database_file(tmp_path: Path, receiver: Receiver) -> None:
    db = str(tmp_path / "fakestripe.sqlite3")
    with FakeStripeServer(db, webhook_url=receiver.url, webhook_secret=SECRET) as first:
        gateway = StripeGateway(API_KEY, api_base=first.url, max_network_retries=0)
        customer = gateway.client.v1.customers.create(params={"email": "kept@example.org"})
        first.flush()
    with FakeStripeServer(db) as second:
        gateway = StripeGateway(API_KEY, api_base=second.url, max_network_retries=0)
        assert gateway.client.v1.customers.retrieve(customer.id).email == "kept@example.org"
        assert [e["type"] for e in gateway.list_events()] == ["customer.created"]
        assert [d["status"] for d in second.deliveries()] == [200]


def test_events_not_yet_delivered_are_sent_after_a_restart(tmp_path: Path, receiver: Receiver) -> None:
    db = str(tmp_path / "fakestripe.sqlite3")
    with FakeStripeServer(db, webhook_url=receiver.url, webhook_secret=SECRET, hold=True) as first:
        StripeGateway(API_KEY, api_base=first.url).client.v1.customers.create(params={"email": "a@example.org"})
    assert receiver.deliveries == []
    with FakeStripeServer(db, webhook_url=receiver.url, webhook_secret=SECRET) as second:
        assert second.flush()
    assert receiver.types() == ["customer.created"]
    stripe.Webhook.construct_event(receiver.deliveries[0].body, receiver.deliveries[0].headers["Stripe-Signature"],
                                   SECRET)


def test_reset_forgets_objects_events_keys_and_deliveries(fake: FakeStripeServer, gateway: StripeGateway) -> None:
    headers = {"Idempotency-Key": "k1"}
    api(fake, "POST", "/v1/customers", data={"email": "a@example.org"}, headers=headers)
    fake.flush()
    assert requests.post(f"{fake.url}/_fake/reset", timeout=10).json() == {"reset": True}
    assert gateway.client.v1.customers.list().data == []
    assert gateway.list_events() == [] and fake.deliveries() == []
    again = api(fake, "POST", "/v1/customers", data={"email": "b@example.org"}, headers=headers)
    assert again.status_code == 200 and again.json()["email"] == "b@example.org"


def test_concurrent_requests_each_get_their_own_object(fake: FakeStripeServer, gateway: StripeGateway) -> None:
    def create(n: int) -> str:
        return gateway.client.v1.customers.create(params={"email": f"c{n}@example.org"}).id

    with ThreadPoolExecutor(max_workers=8) as pool:
        ids = list(pool.map(create, range(40)))
    assert len(set(ids)) == 40
    listed = [c.id for c in gateway.client.v1.customers.list(params={"limit": 100}).auto_paging_iter()]
    assert sorted(listed) == sorted(ids)
    assert fake.flush()
    assert len(fake.deliveries()) == 40


def test_the_command_line_serves_with_settings_from_the_environment(tmp_path: Path, receiver: Receiver) -> None:
    port = _free_port()
    env = {
        **os.environ, "FAKESTRIPE_PORT": str(port), "FAKESTRIPE_DB": str(tmp_path / "fs.sqlite3"),
        "FAKESTRIPE_WEBHOOK_URL": receiver.url, "FAKESTRIPE_WEBHOOK_SECRET": SECRET,
    }
    process = subprocess.Popen([sys.executable, "-m", "newsletter.fakestripe", "--seed", "3"], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            assert process.poll() is None, process.communicate()
            try:
                return requests.get(url, timeout=1).status_code == 200
            except requests.ConnectionError:
                return False

        wait_until(up, timeout=20)
        config = requests.get(f"{url}/_fake/config", timeout=5).json()
        assert (config["webhook_url"], config["seed"], config["public_url"]) == (receiver.url, 3, url)
        gateway = StripeGateway(API_KEY, api_base=url, webhook_secret=SECRET, max_network_retries=0)
        customer = gateway.client.v1.customers.create(params={"email": "cli@example.org"})
        assert cli_main(["flush", "--url", url]) == 0
        [delivery] = receiver.accepted()
        assert gateway.construct_event(delivery.body, delivery.headers["Stripe-Signature"])["data"]["object"][
            "id"] == customer.id
        assert (tmp_path / "fs.sqlite3").exists()
    finally:
        process.terminate()
        out, err = process.communicate(timeout=10)
    assert f"fake Stripe on http://127.0.0.1:{port}" in out, err


def test_the_fake_stands_alone_from_herald_and_from_the_stripe_sdk() -> None:
    import ast

    import newsletter.fakestripe

    package = Path(newsletter.fakestripe.__file__).parent
    imported: set[str] = set()
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported.add(node.module)
            elif isinstance(node, ast.Import):
                imported.update(alias.name for alias in node.names)
    herald = {m for m in imported if m.split(".")[0] == "newsletter" and not m.startswith("newsletter.fakestripe")}
    assert herald == set()
    assert not {m for m in imported if m.split(".")[0] == "stripe"}
