"""A chaos mode for the fault-injecting server: every data request draws a random fault from a seeded RNG.

Faults (each drawn with probability ``fault_rate / len(FAULTS)``): a connection reset before any response
(RST), a body cut short, a stall, 500/502/503/429 with or without Retry-After, a 206 with a wrong
Content-Range, a 206 covering more than asked.  With ``flip_etag`` the entity changes exactly once (new
ETag, new bytes) after a few data requests; every later request sees version 2.

``calm()`` switches the faults off (to prove a failed run left a resumable state).  ``counts`` tallies the
faults served.  Standalone: ``python -m tests.servers.chaos --size 16M --seed 3 --rate 0.4``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import random
import socket
import struct
import sys
import threading
import time
from typing import Any

from .faulty import Faults, FaultyServer, RequestRecord, _Handler, _parse_size

FAULTS = ("reset", "cut", "stall", "500", "502", "503", "429", "wrong_range", "overlong")
_QUIET = Faults()


class ChaosServer(FaultyServer):
    """A FaultyServer whose faults are re-drawn for every request (thread-local, so concurrent requests
    each get their own)."""

    def __init__(self, size: int = 4 << 20, seed: int = 1, fault_rate: float = 0.3, flip_etag: bool = False,
                 max_stall: float = 3.0, include_probe: bool = True, **kwargs: Any) -> None:
        self._local = threading.local()
        self._base = _QUIET
        super().__init__(size=size, faults=Faults(), seed=seed, **kwargs)
        self.httpd.RequestHandlerClass = _ChaosHandler
        self.rng = random.Random(seed * 7919 + 17)
        self.fault_rate = fault_rate
        self.max_stall = max_stall
        self.include_probe_faults = include_probe
        self.flip_at: int | None = self.rng.randint(1, 4) if flip_etag else None
        self.flipped = False
        self.counts: collections.Counter[str] = collections.Counter()
        self._data_seen = 0

    # The handler reads ``owner.faults``: give each handler thread the faults drawn for its request.
    @property  # type: ignore[override]
    def faults(self) -> Faults:
        return getattr(self._local, "faults", None) or self._base

    @faults.setter
    def faults(self, value: Faults) -> None:
        self._base = value

    def calm(self) -> None:
        """No more faults (the ETag flip, if it happened, stays)."""
        self.fault_rate = 0.0

    @property
    def versions(self) -> list[int]:
        """Content versions this server has served so far."""
        return [1, 2] if self.flipped else [1]

    def _record(self, method: str, path: str, headers: dict[str, str]) -> tuple[RequestRecord, int]:
        record, version = super()._record(method, path, headers)
        probe = headers.get("Range", "").replace(" ", "") == "bytes=0-0"
        with self.lock:
            if method == "GET" and not probe:
                self._data_seen += 1
                if self.flip_at is not None and self._data_seen >= self.flip_at and not self.flipped:
                    self.flipped = True
                    self.counts["etag_flip"] += 1
            if self.flipped:
                version = record.version = 2
            fault = None
            if method == "GET" and (not probe or self.include_probe_faults) and self.rng.random() < self.fault_rate:
                fault = self.rng.choice(FAULTS)
            faults = self._draw(fault, probe)
            if fault:
                self.counts[fault] += 1
                record.faults.append("chaos:" + fault)
        self._local.faults = faults
        self._local.fault = fault
        return record, version

    def _draw(self, fault: str | None, probe: bool) -> Faults:
        """The Faults for one request (called under ``self.lock``)."""
        if fault is None or fault == "reset":
            return _QUIET
        rng = self.rng
        common: dict[str, Any] = {"include_probe": probe}
        if fault == "cut":
            return Faults(cut_after=rng.choice([0, 1, rng.randint(2, 1 << 20)]), cut_times=None, **common)
        if fault == "stall":
            return Faults(stall_seconds=rng.uniform(0.3, self.max_stall), stall_after=rng.randint(0, 256 << 10),
                          stall_times=None, **common)
        if fault in ("500", "502", "503", "429"):
            retry_after = rng.choice([None, "0", "1", "Wed, 21 Oct 2015 07:28:00 GMT", "soon"])
            return Faults(error_status=int(fault), error_times=None, retry_after=retry_after, **common)
        if fault == "wrong_range":
            return Faults(wrong_range_times=None, wrong_range_shift=rng.randint(1, 8192), **common)
        if fault == "overlong":
            return Faults(overlong_times=None, **common)
        raise AssertionError(fault)


class _ChaosHandler(_Handler):
    def _serve(self, method: str) -> None:
        owner = self.server.owner
        record, version = owner._record(method, self.path, dict(self.headers.items()))
        if getattr(owner._local, "fault", None) == "reset":
            record.status = 0
            with contextlib.suppress(OSError):  # RST instead of FIN: the client sees ECONNRESET, no response
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return
        try:
            self._respond(owner, record, version, method)
        except (BrokenPipeError, ConnectionResetError, TimeoutError, OSError):
            self.close_connection = True
        except Exception:  # _Stop: the server is shutting down
            self.close_connection = True


def main(argv: list[str] | None = None) -> int:
    """Run a chaos server in the foreground until interrupted."""
    parser = argparse.ArgumentParser(prog="python -m tests.servers.chaos", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--size", type=_parse_size, default=_parse_size("16M"))
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--rate", type=float, default=0.3, help="probability that a request misbehaves")
    parser.add_argument("--flip-etag", action="store_true", help="change the entity once")
    args = parser.parse_args(argv)
    server = ChaosServer(size=args.size, seed=args.seed, fault_rate=args.rate, flip_etag=args.flip_etag,
                         host=args.host, port=args.port)
    print(f"serving {server.url} size={server.size} sha256={server.sha256()} chaos rate={args.rate}", flush=True)
    server.start()
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        print(dict(server.counts), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
