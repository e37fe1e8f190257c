"""A minimal counting SMTP sink for the benchmarks: ESMTP with PIPELINING, counts messages, keeps nothing.

aiosmtpd reads DATA one line at a time and spends ~900 us of CPU per 54 KB message, which would make
the sink the thing measured. This one scans each received chunk for the end-of-data mark only.

Run: python -m bench.sink --port 2525    (XSTAT answers "250 <messages> <bytes> <cpu seconds>"; XRESET zeroes)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import signal

END = b"\r\n.\r\n"


class Counter:
    messages = 0
    octets = 0
    # Distinct connections seen, to check clients really reuse theirs.
    connections = 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class SinkProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.buffer = b""
        self.in_data = False
        self.tail = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:
        self.transport = transport
        Counter.connections += 1
        transport.write(b"220 sink.local ESMTP counting sink\r\n")

    def data_received(self, data: bytes) -> None:
        replies: list[bytes] = []
        while data:
            if self.in_data:
                Counter.octets += len(data)
                # An end mark may straddle two chunks: look across the seam first, it comes earlier.
                j = (self.tail + data[:4]).find(END)
                idx = j - len(self.tail) if 0 <= j < len(self.tail) else data.find(END)
                if idx == -1 and j < 0:
                    self.tail = (self.tail + data)[-4:]
                    break
                self.in_data = False
                Counter.messages += 1
                replies.append(b"250 2.0.0 queued\r\n")
                data = data[idx + len(END):]
                continue
            self.buffer += data
            data = b""
            while not self.in_data:
                line, sep, rest = self.buffer.partition(b"\r\n")
                if not sep:
                    break
                self.buffer = rest
                verb = line[:4].upper()
                if verb == b"EHLO":
                    replies.append(b"250-sink.local\r\n250-PIPELINING\r\n250-8BITMIME\r\n250 SIZE 0\r\n")
                elif verb == b"DATA":
                    replies.append(b"354 end with <CRLF>.<CRLF>\r\n")
                    self.in_data = True
                    self.tail = b"\r\n"  # the CRLF that ended the DATA line starts a possible end mark
                    data, self.buffer = self.buffer, b""
                elif verb == b"QUIT":
                    replies.append(b"221 bye\r\n")
                    self._flush(replies)
                    assert self.transport is not None
                    self.transport.close()
                    return
                elif verb == b"XSTA":
                    replies.append(f"250 {Counter.messages} {Counter.octets} {_cpu():.3f} {Counter.connections}\r\n"
                                   .encode())
                elif verb == b"XRES":
                    Counter.messages = Counter.octets = Counter.connections = 0
                    replies.append(b"250 reset\r\n")
                else:  # HELO, MAIL, RCPT, RSET, NOOP: all fine by the sink
                    replies.append(b"250 ok\r\n")
        self._flush(replies)

    def _flush(self, replies: list[bytes]) -> None:
        if replies and self.transport is not None:
            self.transport.write(b"".join(replies))


async def serve(host: str, port: int, ready_fd: int | None = None) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(SinkProtocol, host, port, backlog=128)
    if ready_fd is not None:
        os.write(ready_fd, b"ready\n")
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        await stop.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=2525)
    parser.add_argument("--ready-fd", type=int, default=None)
    args = parser.parse_args()
    asyncio.run(serve(args.host, args.port, args.ready_fd))


if __name__ == "__main__":
    main()
