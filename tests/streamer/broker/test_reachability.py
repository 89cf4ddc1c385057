"""``Reachability``: an outage told from a quiet topic by a connection to a bootstrap server."""

from __future__ import annotations

import socket

from structlog.testing import capture_logs

from streamer.broker.reachability import Reachability


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_probes_every_server_at_most_every_interval_and_logs_each_change() -> None:
    up: set[tuple[str, int]] = {("b", 2)}
    tried: list[tuple[str, int]] = []

    def connect(address: tuple[str, int], timeout_s: float) -> object:
        tried.append(address)
        if address not in up:
            raise ConnectionRefusedError(address)
        return object()

    clock = Clock()
    probe = Reachability(["a:1", " b:2"], interval_s=5.0, connect=connect, clock=clock)
    with capture_logs() as logs:
        assert probe.check()
        assert tried == [("a", 1), ("b", 2)]
        up.clear()
        clock.now = 4.0
        assert probe.check()  # the last answer, within the interval
        assert len(tried) == 2
        assert not probe.check(force=True)
        clock.now = 9.5
        assert not probe.check()
        probe.saw_broker()  # a batch went through meanwhile
        assert probe.check()
    assert [entry["event"] for entry in logs] == [
        "broker_unreachable",
        "broker_reachable",
    ]
    assert logs[0]["servers"] == "a:1,b:2"


def test_a_real_listening_socket_is_reachable_and_a_closed_port_is_not() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert Reachability([f"127.0.0.1:{port}"]).check()
    assert not Reachability([f"127.0.0.1:{port}"]).check()  # closed: refused at once
