"""Waiting on the broker: a flush, or a client call with no time limit of its own (kafka-python's
transaction calls), waits in slices and says so after each, re-raises what the call raised, and
gives up when told to, without waiting for the call."""

from __future__ import annotations

import threading

import pytest
from kafka.errors import KafkaTimeoutError, ProducerFencedError

from streamer.broker.waits import DeliveryWait
from streamer.errors import DeliveryError


class SlowBroker:
    """A producer's ``flush(timeout)`` as kafka-python's behaves while the broker is away: a
    ``KafkaTimeoutError`` per slice for ``away`` slices, then done."""

    def __init__(self, away: int) -> None:
        self.away, self.timeouts = away, []

    def flush(self, timeout: float | None = None) -> None:
        self.timeouts.append(timeout)
        if len(self.timeouts) <= self.away:
            raise KafkaTimeoutError("Timeout waiting for future")


def test_a_flush_waiting_on_the_broker_tells_of_every_slice_then_returns() -> None:
    waited: list[float] = []
    producer = SlowBroker(away=3)
    DeliveryWait(slice_s=0.01, on_wait=waited.append).flush(producer)
    assert producer.timeouts == [0.01] * 4, "never one unbounded wait"
    assert len(waited) == 3 and waited == sorted(waited)


def test_a_flush_with_a_limit_gives_up_with_a_delivery_error() -> None:
    wait = DeliveryWait(slice_s=0.01, limit_s=0.0)
    with pytest.raises(DeliveryError, match="within 0 s"):
        wait.flush(SlowBroker(away=1000))


def test_a_call_waiting_on_the_broker_tells_of_every_slice_then_returns() -> None:
    answered = threading.Event()
    waited: list[float] = []

    def on_wait(seconds: float) -> None:
        waited.append(seconds)
        if len(waited) == 3:
            answered.set()  # the broker answers after the third slice

    DeliveryWait(slice_s=0.01, on_wait=on_wait).call("commit_transaction", answered.wait)
    assert len(waited) == 3 and waited == sorted(waited)


def test_what_the_call_raised_is_raised_in_the_waiting_thread() -> None:
    def refused() -> None:
        raise ProducerFencedError("fenced")

    with pytest.raises(ProducerFencedError, match="fenced"):
        DeliveryWait(slice_s=0.01).call("commit_transaction", refused)


def test_a_call_with_a_limit_gives_up_with_a_delivery_error_and_leaves_it_behind() -> None:
    never = threading.Event()
    try:
        with pytest.raises(DeliveryError, match="did not answer commit_transaction within 0 s"):
            DeliveryWait(slice_s=0.01, limit_s=0.0).call("commit_transaction", never.wait)
    finally:
        never.set()  # the helper thread ends
