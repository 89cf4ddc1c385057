"""The bytes a broker sent just before closing reach kafka-python's protocol (a refused SASL
login is such a reply), and the close is still reported on the next read."""

from __future__ import annotations

import socket

import pytest
from kafka.errors import KafkaConnectionError
from kafka.net.transport import KafkaSSLTransport, KafkaTCPTransport

import streamer.broker  # noqa: F401  (installs the patch)
from streamer.broker.kafka_python_reads import keep_bytes_read_before_a_close


@pytest.fixture
def closed_after_reply() -> socket.socket:
    """The client end of a socket pair whose other end wrote a reply and closed before the
    client read anything: the reply and the close wait together."""
    client, broker = socket.socketpair()
    broker.sendall(b"refusal")
    broker.close()
    client.setblocking(False)
    return client


def test_the_reply_comes_first_and_the_close_next(closed_after_reply: socket.socket) -> None:
    transport = KafkaTCPTransport(net=None, sock=closed_after_reply)
    assert transport._sock_recv() == (b"refusal", None)
    data, error = transport._sock_recv()
    assert data == b"" and isinstance(error, KafkaConnectionError)
    closed_after_reply.close()


def test_patching_twice_wraps_once() -> None:
    patched = KafkaTCPTransport._sock_recv
    keep_bytes_read_before_a_close()
    assert KafkaTCPTransport._sock_recv is patched
    assert KafkaSSLTransport.__dict__["_sock_recv"]._tandem_keeps_bytes_before_close
