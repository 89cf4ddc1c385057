"""Whether any bootstrap server accepts a connection: what readiness says in an outage.

An idle daemon in a broker outage gets no error at all: both clients' polls just return
nothing, so readiness would go on saying "consuming". A TCP connection to each bootstrap server
in turn (a fraction of a second, at most every ``interval_s``, 5 s, while idle) tells an outage
from a quiet topic without asking either client, whichever process its consumer lives in. It
checks the network path only; a broker that accepts connections but refuses the client shows
as failed batches instead.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence

import structlog

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S = 1.0
"""How long one server may take to accept: a local or same-region broker answers in
milliseconds; an outage refuses at once or never answers."""


class Reachability:
    """Probes ``servers`` (``host:port``) at most every ``interval_s`` seconds and remembers the
    answer; logs ``broker_unreachable`` and ``broker_reachable`` when it changes."""

    def __init__(
        self,
        servers: Sequence[str],
        interval_s: float = 5.0,
        connect: Callable[[tuple[str, int], float], object] = socket.create_connection,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.servers = [_address(server) for server in servers]
        self.interval_s, self.connect, self.clock = interval_s, connect, clock
        self.reachable = True
        self.checked_at = -float("inf")

    def check(self, force: bool = False) -> bool:
        """Whether a server accepted a connection, probing again when the last probe is older
        than ``interval_s`` (or ``force``)."""
        now = self.clock()
        if not force and now - self.checked_at < self.interval_s:
            return self.reachable
        self.checked_at = now
        reachable = any(self._accepts(address) for address in self.servers)
        if reachable != self.reachable:
            event = "broker_reachable" if reachable else "broker_unreachable"
            (log.info if reachable else log.warning)(event, servers=self.describe())
        self.reachable = reachable
        return reachable

    def saw_broker(self) -> None:
        """A batch went through: the broker answered, whatever the last probe found."""
        if not self.reachable:
            log.info("broker_reachable", servers=self.describe())
        self.reachable, self.checked_at = True, self.clock()

    def describe(self) -> str:
        """The servers probed, as configured: ``host:port,host:port``."""
        return ",".join(f"{host}:{port}" for host, port in self.servers)

    def _accepts(self, address: tuple[str, int]) -> bool:
        try:
            connection = self.connect(address, CONNECT_TIMEOUT_S)
        except OSError:
            return False
        close = getattr(connection, "close", None)
        if close is not None:
            close()
        return True


def _address(server: str) -> tuple[str, int]:
    """``host:port`` (IPv6 hosts in brackets) as a socket address."""
    host, _, port = server.strip().rpartition(":")
    return host.strip("[]"), int(port)
