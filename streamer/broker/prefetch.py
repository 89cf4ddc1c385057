"""A Kafka source that polls ahead: the consumer runs in a fetch process of its own.

``PrefetchingSource`` is the daemon's side of ``streamer.broker.fetcher``: while the daemon works
through batch n, the fetch process polls batches n+1 and on (up to ``[batch].prefetch``) on
another core, instead of taking turns with the daemon on one interpreter lock. It keeps the
guarantees of the inline ``KafkaSource``: offsets are committed only when ``commit`` is called
(by the fetch process, between its polls); a ``rewind`` starts a new epoch, so batches fetched
ahead arrive stale and are dropped; rebalances reach the listener on the daemon's thread, and a
revoke waits until its state is saved; with transactions, offsets go through the daemon's
producer with the group metadata sent with the batch. If the fetch process dies, ``poll`` raises
``FetchProcessError``.

Reasoning and measurements: docs/performance.md; delivery and rebalances: docs/delivery.md.
"""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import structlog

from streamer.broker.sources import CommittedLag, PartitionListener, kafka_offsets
from streamer.broker.transactions import Transaction
from streamer.broker.waits import ignore_wait
from streamer.config import BatchConfig, KafkaConfig, LogConfig
from streamer.errors import BrokerUnavailableError, FetchProcessError, TopicError
from streamer.records import Partition, SourceRecord, first_offsets, from_columns, next_offsets

log = structlog.get_logger(__name__)

START_TIMEOUT_S = 120.0
CLOSE_TIMEOUT_S = 30.0
MAX_RESTARTS = 5
RESTART_PERIOD_S = 600.0
"""A fetch process that dies is restarted, up to ``MAX_RESTARTS`` times in this many seconds."""
RECEIVE_SLICE_S = 1.0
"""How long the daemon waits for the fetch process's next message between two ``on_wait``s."""


class PrefetchingSource:
    """The ``Source`` of ``streamer.runner`` over a fetch process; see the module docstring.

    ``listener`` is told of rebalances (set it before the first ``poll``); ``transaction``, if
    given, commits offsets with the batch's output instead of the consumer.
    """

    def __init__(
        self,
        kafka: KafkaConfig,
        batch: BatchConfig,
        logs: LogConfig,
        listener: PartitionListener | None = None,
        transaction: Transaction | None = None,
    ) -> None:
        self.listener, self.transaction = listener, transaction
        self.settings = (kafka, batch, logs.level, logs.format)
        self.epoch = 0
        self.latest_offsets: dict[Partition, tuple[int, int]] = {}
        self.committed_lag = CommittedLag()
        self.group_metadata: Any = None
        self.closed = False
        self.assigned: set[Partition] = set()
        self.lost: FetchProcessError | None = None
        """Why the fetch process was found gone outside ``poll`` (which restarts it)."""
        self.restarts: deque[float] = deque()
        """When the fetch process was restarted, within the last ``RESTART_PERIOD_S``."""
        self.restarted = 0
        """How many times the fetch process was restarted in all."""
        self.on_wait: Callable[[float], None] = ignore_wait
        """Called with the seconds waited after each ``RECEIVE_SLICE_S`` without a message from
        the fetch process, while that is within ``answer_within_s`` (the daemon beats its
        liveness: in a broker outage the fetch process spends one request timeout on each
        commit it tries, and the loop waiting for it looked stalled)."""
        self.answer_within_s = 2 * kafka.request_timeout_ms / 1000
        """How long a fetch process that is alive may take to send its next message: a commit
        and a poll, each bounded by the request timeout. Past it, waiting is not reported, so a
        hung fetch process shows as a stalled daemon."""
        self._spawn()

    def _spawn(self) -> None:
        """Start a fetch process and wait until its consumer is subscribed."""
        ours, theirs = multiprocessing.Pipe()
        self.conn = ours
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streamer.broker.fetcher", str(theirs.fileno())],
            pass_fds=[theirs.fileno()],
        )
        theirs.close()
        try:
            self.conn.send(self.settings)
            self._started(self.settings[0])
        except BaseException:
            self._stop_process()
            raise

    def _started(self, kafka: KafkaConfig) -> None:
        if not self.conn.poll(START_TIMEOUT_S):
            raise FetchProcessError(f"fetch process did not start within {START_TIMEOUT_S:.0f}s")
        message = self._receive()
        if message[0] == "failed":
            _, kind, reason = message
            if kind == "topic":
                raise TopicError(reason)
            raise BrokerUnavailableError(f"fetch process: no broker at {kafka.bootstrap}: {reason}")
        log.info("fetch_process_started", pid=self.process.pid)

    def poll(self) -> list[SourceRecord]:
        """The batch the fetch process has ready (or is collecting: it waits at most
        ``[batch].max_wait_ms``), and lets it fetch one more ahead. A fetch process found gone
        is restarted first (``_restart``)."""
        if self.lost is not None:
            self._restart(self.lost)
        try:
            return self._poll()
        except FetchProcessError as error:
            self._restart(error)
            return []

    def _poll(self) -> list[SourceRecord]:
        while True:
            message = self._receive_handling_rebalances()
            _, epoch, columns, fetched_offsets, group_metadata = message
            self.latest_offsets, self.group_metadata = fetched_offsets, group_metadata
            self._send(("next",))  # fetch the next batch while this one is worked on
            if epoch == self.epoch:
                records = from_columns(columns)
                self.committed_lag.handed_out(records)
                return records
            log.debug("stale_batch_dropped", records=len(columns[1]))

    def commit(self, records: Sequence[SourceRecord]) -> None:
        """Commit, per partition, the offset after the last of ``records`` (by the fetch process,
        between its polls); with transactions, commit the open transaction with those offsets
        (with none, if ``records`` is empty: a checkpoint saved outside a batch)."""
        offsets = next_offsets(records)
        if self.transaction is not None:
            self.transaction.commit(kafka_offsets(offsets), self.group_metadata)
        elif offsets and not self._tell(("commit", offsets)):
            return  # the restart saves the state: the records are skipped when they come again
        self.committed_lag.committed(offsets)

    def rewind(self, records: Sequence[SourceRecord]) -> None:
        """Serve ``records`` again from the next poll on; the batches fetched ahead of them are
        dropped when they arrive, and fetched again."""
        self.seek(first_offsets(records))

    def seek(self, offsets: Mapping[Partition, int]) -> None:
        """Serve each partition of ``offsets`` from that offset on; the batches fetched ahead
        are dropped when they arrive, and fetched again."""
        self.epoch += 1
        self._tell(("rewind", self.epoch, dict(offsets)))

    def lag(self) -> dict[Partition, int]:
        """Records behind the end of each assigned partition, as of the last batch fetched,
        counted from the first this daemon has not committed (``CommittedLag``): the fetch
        process's own position is batches ahead of that."""
        return self.committed_lag.lag(self.latest_offsets)

    def close(self) -> None:
        """Commit what is pending, leave the group (saving revoked partitions' state through
        the listener), and end the fetch process."""
        if self.closed:
            return
        self.closed = True
        try:
            self._send(("close",))
            deadline = time.monotonic() + CLOSE_TIMEOUT_S
            while True:
                if not self.conn.poll(max(deadline - time.monotonic(), 0.0)):
                    log.warning("fetch_process_close_timed_out", timeout_s=CLOSE_TIMEOUT_S)
                    break
                message = self._receive()
                if message[0] == "closed":
                    if not message[1]:
                        log.warning("final_commit_failed")
                    break
                if message[0] != "batch":  # a batch fetched ahead is left uncommitted
                    self._handle_rebalance(message)
        except FetchProcessError as error:
            log.warning("fetch_process_lost_at_close", error=str(error))
        finally:
            self._stop_process()

    def _receive_handling_rebalances(self) -> tuple[Any, ...]:
        """The next batch message, after telling the listener of any rebalance before it."""
        while True:
            message = self._receive()
            if message[0] == "batch":
                return message
            self._handle_rebalance(message)

    def _handle_rebalance(self, message: tuple[Any, ...]) -> None:
        match message:
            case ("revoked", partitions):
                self.committed_lag.forget(partitions)
                self.assigned.difference_update(partitions)
                if self.listener is not None:
                    self.listener.partitions_revoked(partitions)
                self._send(("ack",))
            case ("assigned", partitions):
                self.committed_lag.forget(partitions)
                self.assigned.update(partitions)
                if self.listener is not None:
                    self.listener.partitions_assigned(partitions)
            case _:
                raise FetchProcessError(f"unexpected message from the fetch process: {message!r}")

    def _tell(self, message: tuple[Any, ...]) -> bool:
        """Send ``message``; if the fetch process is gone, note it for the next ``poll`` (which
        restarts it) and return False: the caller may be in the middle of a batch."""
        try:
            self._send(message)
        except FetchProcessError as error:
            self.lost = self.lost or error
            return False
        return True

    def _restart(self, error: FetchProcessError) -> None:
        """Start a new fetch process in place of one that is gone, at most ``MAX_RESTARTS``
        times in ``RESTART_PERIOD_S`` (then ``error`` is raised: something keeps killing it).

        Its partitions are lost without a revocation; the listener saves their state as for
        one, so the new consumer's assignment restores it and resumes each partition from what
        it reflects (``streamer.resume``): nothing is skipped, learned twice or alerted twice."""
        now = time.monotonic()
        while self.restarts and now - self.restarts[0] > RESTART_PERIOD_S:
            self.restarts.popleft()
        if len(self.restarts) >= MAX_RESTARTS:
            raise FetchProcessError(
                f"{error} ({MAX_RESTARTS} restarts in {RESTART_PERIOD_S:.0f} s already)"
            ) from error
        log.warning("fetch_process_restarting", error=str(error), restart=len(self.restarts) + 1)
        if self.process.poll() is None:
            self.process.kill()  # alive but not answering as it should: not to be trusted
        self._stop_process()
        lost, self.assigned = sorted(self.assigned), set()
        self.committed_lag.forget(lost)
        if lost and self.listener is not None:
            self.listener.partitions_revoked(lost)
        self.lost, self.epoch = error, 0  # a new process counts its epochs from 0
        self._spawn()  # if the broker is away, this raises, and the next poll tries again
        self.lost = None
        self.restarts.append(now)
        self.restarted += 1
        log.info("fetch_process_restarted", pid=self.process.pid, partitions_lost=len(lost))

    def _send(self, message: tuple[Any, ...]) -> None:
        try:
            self.conn.send(message)
        except OSError as error:
            raise FetchProcessError(f"fetch process gone ({self._status()})") from error

    def _receive(self) -> tuple[Any, ...]:
        started = time.monotonic()
        try:
            while not self.conn.poll(RECEIVE_SLICE_S):  # a closed pipe polls True, then recv fails
                waited = time.monotonic() - started
                if waited < self.answer_within_s:
                    self.on_wait(waited)
            message: tuple[Any, ...] = self.conn.recv()
        except (EOFError, OSError) as error:
            raise FetchProcessError(f"fetch process gone ({self._status()})") from error
        return message

    def _status(self) -> str:
        code = self.process.poll()
        return "still running" if code is None else f"exit status {code}"

    def _stop_process(self) -> None:
        self.conn.close()
        try:
            self.process.wait(timeout=CLOSE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
