"""The raw baseline: N pre-built messages pushed with plain smtplib.sendmail over persistent connections.

No database, no Celery, no personalization: what the machine does when it only sends. run.py runs it
against the same sink and message as the end-to-end send; alone: python -m bench.raw_baseline --help.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import smtplib
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Figures:
    messages: int
    seconds: float
    client_cpu: float  # seconds, all sending processes together

    @property
    def per_second(self) -> float:
        return self.messages / self.seconds

    @property
    def cpu_us(self) -> float:
        return self.client_cpu / self.messages * 1e6


def _push(host: str, port: int, message: bytes, count: int, first: int, start, out) -> None:
    conn = smtplib.SMTP(host, port, local_hostname="bench.local")
    conn.ehlo()
    start.wait()
    cpu = time.process_time()
    for i in range(first, first + count):
        conn.sendmail("newsletter@news.example.org", [f"reader{i}@example.com"], message)
    out.put(time.process_time() - cpu)
    conn.quit()


def run(host: str, port: int, message: bytes, total: int, processes: int = 2) -> Figures:
    """Send `total` copies of `message` from `processes` processes, each over one connection."""
    ctx = mp.get_context("fork")
    start, out = ctx.Event(), ctx.Queue()
    share = [total // processes + (1 if i < total % processes else 0) for i in range(processes)]
    firsts = [sum(share[:i]) + 1 for i in range(processes)]
    workers = [ctx.Process(target=_push, args=(host, port, message, n, f, start, out)) for n, f in zip(share, firsts,
                                                                                                    strict=True)]
    for w in workers:
        w.start()
    time.sleep(0.5)  # every connection is open before the clock starts
    began = time.perf_counter()
    start.set()
    cpu = sum(out.get() for _ in workers)
    seconds = time.perf_counter() - began
    for w in workers:
        w.join()
    return Figures(total, seconds, cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True, help="a running sink (python -m bench.sink)")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=55_000, help="bytes per message")
    parser.add_argument("--processes", type=int, default=2)
    args = parser.parse_args()
    line = b"x" * 74 + b"=\r\n"
    message = b"Subject: baseline\r\n\r\n" + line * (args.size // len(line))
    figures = run("127.0.0.1", args.port, message, args.messages, args.processes)
    print(f"{figures.per_second:,.0f} msg/s, client CPU {figures.cpu_us:,.0f} us/msg")


if __name__ == "__main__":
    main()
