"""kafka-python keeps the bytes it read just before the broker closed the connection.

kafka-python 3.0's transport reads a socket until it would block; when the broker's last
response and its close arrive together (the same read), it reports the close and drops the
response. A SASL refusal is such a response: the broker answers and closes, so on a loaded
machine, where the client reads late, the refusal was lost and a wrong password looked like an
absent broker (docs/delivery.md, "Credentials refused at start"). The patch hands the bytes on
first; the next read meets the close again (a closed socket stays readable), so the connection
still ends as it did.
"""

from __future__ import annotations

from typing import Any

from kafka.net.transport import KafkaSSLTransport, KafkaTCPTransport

_PATCHED = "_tandem_keeps_bytes_before_close"


def keep_bytes_read_before_a_close() -> None:
    """Patch both transports' ``_sock_recv`` so a read that met the close returns its bytes
    with no error. Idempotent; leaves a kafka-python without ``_sock_recv`` as it is."""
    for transport in (KafkaTCPTransport, KafkaSSLTransport):
        read = transport.__dict__.get("_sock_recv")
        if read is None or getattr(read, _PATCHED, False):
            continue
        transport._sock_recv = _bytes_first(read)


def _bytes_first(read: Any) -> Any:
    def read_keeping_bytes(self: Any) -> tuple[bytes, Exception | None]:
        data, error = read(self)
        return (data, None) if data else (data, error)

    setattr(read_keeping_bytes, _PATCHED, True)
    read_keeping_bytes.__doc__ = read.__doc__
    return read_keeping_bytes
