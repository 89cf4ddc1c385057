"""How the daemon waits on the broker: in slices, saying after each one that the wait goes on.

Every wait of the run loop on the broker goes through one ``DeliveryWait``, so the daemon can
beat ``/health/live`` and say in ``/health/ready`` why it is not ready while the broker is away,
and so a stop can give up waiting after a bound (``limit_s``) instead of sitting out the
client's own timeout. A flush has a timeout of its own; kafka-python's transaction calls
(``send_offsets_to_transaction``, ``commit_transaction``, ``abort_transaction``) have none, so
they run in a helper thread that the loop waits for the same way (``call``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kafka.errors import KafkaTimeoutError

from streamer.errors import DeliveryError


def ignore_wait(waited_s: float) -> None:
    """No one to tell that a wait goes on (a flush's, or one for the fetch process)."""


@dataclass
class DeliveryWait:
    """How a daemon's sinks and transactions wait for the broker, shared by all of them.

    A wait goes in slices of ``slice_s`` seconds and calls ``on_wait`` with the seconds waited
    after each unfinished one: the producer's own delivery timeout (120 s) bounds a flush, but
    a run loop silent for that long looked stalled to ``/health/live`` while the broker was
    down; the daemon beats and says why it is not ready instead. ``limit_s``, when set, gives
    up after that many seconds with a ``DeliveryError`` (set while closing: a final checkpoint
    to an absent broker held the exit for 29 to 70 s).
    """

    slice_s: float = 1.0
    limit_s: float | None = None
    on_wait: Callable[[float], None] = field(default=ignore_wait)

    def flush(self, producer: Any) -> None:
        """Return once every record sent before the call has completed (acknowledged or
        failed); raise ``DeliveryError`` past ``limit_s``."""
        started = time.monotonic()
        while True:
            try:
                producer.flush(timeout=self.slice_s)
                return
            except KafkaTimeoutError:
                self._waited(started, "the broker acknowledged nothing")

    def call(self, what: str, action: Callable[[], None]) -> None:
        """Run ``action``, a client call with no time limit of its own, in a helper thread and
        wait for it in slices; re-raise what it raised. Past ``limit_s`` the call is left to
        finish or hang in its thread (a daemon thread: it cannot hold the process's exit) and
        ``DeliveryError`` is raised."""
        outcome: list[BaseException | None] = []

        def run() -> None:
            try:
                action()
            except BaseException as error:  # handed to the waiting thread, re-raised there
                outcome.append(error)
            else:
                outcome.append(None)

        helper = threading.Thread(target=run, name=f"tandem-{what}", daemon=True)
        started = time.monotonic()
        helper.start()
        while True:
            helper.join(self.slice_s)
            if not helper.is_alive():
                break
            self._waited(started, f"the broker did not answer {what}")
        if outcome[0] is not None:
            raise outcome[0]

    def _waited(self, started: float, nothing: str) -> None:
        """After an unfinished slice: give up past ``limit_s``, else tell ``on_wait``."""
        waited = time.monotonic() - started
        if self.limit_s is not None and waited >= self.limit_s:
            raise DeliveryError(f"{nothing} within {self.limit_s:g} s")
        self.on_wait(waited)
