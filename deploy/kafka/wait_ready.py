#!/usr/bin/env python3
"""Wait until a Kafka broker really serves clients.

    python3 wait_ready.py HOST:PORT [--timeout SECONDS]

A TCP connect is not enough: the port can be open while the broker is still
fenced or loading. So send a Kafka Metadata request and succeed only when the
response lists at least one broker (a KRaft broker lists only unfenced brokers).

Metadata v4 is used: not "flexible" (that starts at v9), so the encoding is
plain fixed-width ints and int16-length strings, and well inside what brokers
support (Kafka 4.1.1 advertises Metadata v0-v13; KIP-896 removed old versions
of other APIs, not of Metadata).

Exit 0 when ready, 1 when the timeout ran out. --timeout 0 tries once.
Standard library only, so it runs before any virtualenv exists.
"""

import argparse
import socket
import struct
import sys
import time

METADATA_KEY, METADATA_VERSION = 3, 4
CLIENT_ID = b"caj-wait-ready"


def metadata_request(correlation_id: int) -> bytes:
    # Request header v1: api_key, api_version, correlation_id, client_id.
    header = struct.pack(">hhih", METADATA_KEY, METADATA_VERSION, correlation_id, len(CLIENT_ID)) + CLIENT_ID
    # Body v4: topics = empty array (brokers only, no topics),
    # allow_auto_topic_creation = false.
    body = struct.pack(">i?", 0, False)
    payload = header + body
    return struct.pack(">i", len(payload)) + payload


def recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("broker closed the connection")
        data += chunk
    return data


def broker_count(host: str, port: int, timeout: float) -> int:
    """Send one Metadata request and return how many brokers it lists."""
    correlation_id = int(time.monotonic() * 1000) & 0x7FFFFFFF
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(metadata_request(correlation_id))
        (size,) = struct.unpack(">i", recv_exact(sock, 4))
        response = recv_exact(sock, size)
    # Response header v0: correlation_id. Body v4 starts with
    # throttle_time_ms, then the brokers array length; nothing else is needed.
    got_id, _throttle, brokers = struct.unpack_from(">iii", response)
    if got_id != correlation_id:
        raise ValueError(f"correlation id mismatch: sent {correlation_id}, got {got_id}")
    return brokers


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("address", help="HOST:PORT of the broker, e.g. 127.0.0.1:9092")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to keep trying (default 60)")
    args = parser.parse_args()

    host, _, port = args.address.rpartition(":")
    if not host or not port.isdigit():
        parser.error(f"expected HOST:PORT, got {args.address!r}")

    deadline = time.monotonic() + args.timeout
    last_problem = "no attempt made"
    while True:
        # Each attempt gets at most 5 s so a hung connection cannot eat the budget.
        attempt_timeout = min(5.0, max(deadline - time.monotonic(), 1.0))
        try:
            brokers = broker_count(host, int(port), attempt_timeout)
            if brokers > 0:
                return 0
            last_problem = "metadata lists no broker yet"
        except (OSError, ValueError, struct.error) as exc:
            last_problem = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            print(f"wait_ready: {args.address} not ready after {args.timeout:g}s ({last_problem})", file=sys.stderr)
            return 1
        time.sleep(0.5)


if __name__ == "__main__":
    sys.exit(main())
