"""The fetch process: a ``KafkaSource`` in a process of its own, polling ahead of the daemon.

Run as ``python -m streamer.broker.fetcher FD``: FD is the inherited end of a ``multiprocessing``
pipe, which first carries the settings; ``streamer.broker.prefetch`` is the daemon's side. It may
be up to ``[batch].prefetch`` batches ahead: each batch sent spends one credit, each ("next",)
gives one back. Why a separate process: docs/performance.md.

What comes in (from the daemon), handled between polls:
    ("next",)                     the daemon received a batch: poll one more
    ("commit", {partition: offset}) commit these offsets (merged with any not yet committed)
    ("rewind", epoch, {partition: offset}) seek back; batches already sent are stale
    ("close",)                    commit what is pending, leave the group, exit
What goes out:
    ("ready",) or ("failed", kind, message)   once the consumer is subscribed (or could not be)
    ("batch", epoch, columns, fetched_offsets, group_metadata)
    ("revoked", partitions), then waits for ("ack",)   from inside the rebalance callback
    ("assigned", partitions)
    ("closed", committed)

A commit that the broker does not answer is kept and tried again after the next poll; one the
group refuses (the partitions moved) is dropped with a warning, as ``KafkaSource.commit`` does.
If the daemon dies, the pipe closes: this process leaves the group and exits.
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Collection
from multiprocessing.connection import Connection
from typing import Any

import structlog
from kafka.errors import CommitFailedError, KafkaError

from streamer.broker.sources import KafkaSource, kafka_offsets
from streamer.config import BatchConfig, KafkaConfig
from streamer.errors import DaemonGoneError, TandemError, TopicError
from streamer.logging import configure_logging
from streamer.records import Partition, RecordColumns

log = structlog.get_logger(__name__)

COMMIT_TIMEOUT_MS = 10_000
COMMIT_RETRY_S = 1.0


class Sender:
    """Sends messages to the daemon in order, from a thread of its own: a batch is over a
    megabyte, more than a socket buffer holds, so a send blocks until the daemon reads it, and
    the daemon reads only between batches. Meanwhile the fetch process polls the next batch."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.queue: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self.gone = threading.Event()
        self.thread = threading.Thread(target=self._run, name="tandem-fetch-sender", daemon=True)
        self.thread.start()

    def send(self, message: tuple[Any, ...]) -> None:
        """Queue ``message``; raises ``DaemonGoneError`` once a send found the pipe closed."""
        if self.gone.is_set():
            raise DaemonGoneError()
        self.queue.put(message)

    def drain(self) -> None:
        """Return once everything queued is sent (or the daemon is gone)."""
        self.queue.join()

    def _run(self) -> None:
        while True:
            message = self.queue.get()
            try:
                if not self.gone.is_set():
                    self.conn.send(message)
            except OSError:
                self.gone.set()
            finally:
                self.queue.task_done()


class Receiver:
    """Reads the daemon's messages on a thread of its own, the pipe's only reader: acks go to
    the rebalance callback waiting for them (on kafka-python's network thread), commands to the
    loop. A closed pipe puts ``None`` in both."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.commands: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self.acks: queue.Queue[tuple[Any, ...] | None] = queue.Queue()
        self.thread = threading.Thread(target=self._run, name="tandem-fetch-receiver", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                message: tuple[Any, ...] = self.conn.recv()
            except (EOFError, OSError):
                self.commands.put(None)
                self.acks.put(None)
                return
            (self.acks if message == ("ack",) else self.commands).put(message)

    def command(self, timeout: float | None) -> tuple[Any, ...] | None:
        """The next command, waiting up to ``timeout`` seconds (None: as long as it takes);
        None if none came. Raises ``DaemonGoneError`` once the pipe is closed."""
        try:
            message = self.commands.get(block=timeout != 0, timeout=timeout or None)
        except queue.Empty:
            return None
        if message is None:
            self.commands.put(None)  # every later call says so too
            raise DaemonGoneError()
        return message

    def ack(self) -> None:
        """Wait for the daemon's ack of a revocation."""
        if self.acks.get() is None:
            raise DaemonGoneError()


class Fetcher:
    """The loop of the fetch process; see the module docstring."""

    def __init__(
        self, conn: Connection, kafka: KafkaConfig, batch: BatchConfig, depth: int
    ) -> None:
        self.conn = conn
        self.sender = Sender(conn)
        self.receiver = Receiver(conn)
        self.credit = depth  # batches it may send that the daemon has not received yet
        self.epoch = 0
        self.closing = False
        self.to_commit: dict[Partition, int] = {}
        self.retry_commit_at = 0.0
        self.in_flight: deque[dict[Partition, int]] = deque()
        """Per batch sent and not yet received by the daemon (oldest first), the first offset of
        each partition in it: what a rewind makes stale, and must fetch again."""
        self.orphaned = False
        self.source = KafkaSource(kafka, batch, listener=self)

    def run(self) -> bool:
        """Serve the daemon until it says close; True if everything it asked to commit was."""
        while not self.closing:
            self._handle_commands(wait=self.credit == 0 and not self._commit_due())
            if self._commit_due():
                self._commit()
            if self.credit > 0 and not self.closing:
                self._send_batch(self.source.poll_fetched())
        self._commit()
        return not self.to_commit

    def _send_batch(self, fetched: list[Any]) -> None:
        """Ship ``fetched`` (kafka-python ``ConsumerRecord``s, all of the input topic) as
        ``RecordColumns``, with each partition's end and position and the group metadata as of
        now (the daemon counts the lag from what it committed: ``CommittedLag``)."""
        self.credit -= 1
        columns: RecordColumns = (
            fetched[0].topic if fetched else "",
            [r.partition for r in fetched],
            [r.offset for r in fetched],
            [r.key for r in fetched],
            [r.value for r in fetched],
            [r.timestamp for r in fetched],
            [tuple(r.headers) if r.headers else () for r in fetched],
        )
        first: dict[Partition, int] = {}
        for partition, offset in zip(columns[1], columns[2], strict=True):
            first.setdefault((columns[0], partition), offset)
        self.in_flight.append(first)
        self._send(
            (
                "batch",
                self.epoch,
                columns,
                self.source.fetched_offsets(),
                self.source.consumer.group_metadata(),
            )
        )

    def _commit_due(self) -> bool:
        return bool(self.to_commit) and time.monotonic() >= self.retry_commit_at

    def _handle_commands(self, wait: bool) -> None:
        """Everything the daemon sent so far; with ``wait``, block until at least one arrives
        (or a commit retry falls due)."""
        timeout: float | None = 0.0
        if wait:
            timeout = max(self.retry_commit_at - time.monotonic(), 0.0) if self.to_commit else None
        while (command := self.receiver.command(timeout)) is not None:
            self._handle(command)
            timeout = 0.0

    def _handle(self, command: tuple[Any, ...]) -> None:
        match command:
            case ("next",):
                self.credit += 1
                self.in_flight.popleft()
            case ("commit", offsets):
                for partition, offset in offsets.items():
                    self.to_commit[partition] = max(self.to_commit.get(partition, 0), offset)
            case ("rewind", epoch, offsets):
                self._rewind(epoch, offsets)
            case ("close",):
                self.closing = True
            case _:
                raise ValueError(f"fetch process: unknown command {command!r}")

    def _rewind(self, epoch: int, offsets: dict[Partition, int]) -> None:
        """Seek back to ``offsets`` and to the start of every batch sent that the daemon has
        not received yet (it drops them as stale: their ``epoch`` is older)."""
        self.epoch = epoch
        seek = dict(offsets)
        for sent in self.in_flight:
            for partition, offset in sent.items():
                seek[partition] = min(seek.get(partition, offset), offset)
        self.source.seek_owned(seek)

    def _commit(self) -> None:
        if not self.to_commit:
            return
        offsets = kafka_offsets(self.to_commit)
        try:
            self.source.consumer.commit(offsets, timeout_ms=COMMIT_TIMEOUT_MS)
        except CommitFailedError as error:
            log.warning("commit_refused", error=str(error), partitions=len(offsets))
        except KafkaError as error:
            log.warning("commit_failed", error=repr(error), retry_in_s=COMMIT_RETRY_S)
            self.retry_commit_at = time.monotonic() + COMMIT_RETRY_S
            return
        self.to_commit = {}

    # The rebalance listener (called on kafka-python's network thread, inside ``poll``).

    def partitions_revoked(self, partitions: Collection[Partition]) -> None:
        """Tell the daemon, and wait until it has saved their state: their next owner restores
        it (commands that arrive meanwhile wait for the loop)."""
        if self.orphaned:
            return
        revoked = sorted(partitions)
        try:
            self._send(("revoked", revoked))
            self.receiver.ack()
        except DaemonGoneError:
            _exit_orphaned()

    def partitions_assigned(self, partitions: Collection[Partition]) -> None:
        if self.orphaned:
            return
        try:
            self._send(("assigned", list(partitions)))
        except DaemonGoneError:
            _exit_orphaned()

    def _send(self, message: tuple[Any, ...]) -> None:
        self.sender.send(message)

    def close(self) -> None:
        self.source.close()


def _exit_orphaned() -> None:
    """The daemon died while this process was inside a rebalance (on kafka-python's network
    thread, where nothing can unwind the consumer): exit at once; the group times it out."""
    log.warning("fetch_process_orphaned", during="rebalance")
    os._exit(0)


def serve(conn: Connection) -> int:
    """The fetch process's life: settings, subscribe, serve, close. Exit status 0 unless the
    consumer could not start."""
    # The daemon decides when to stop; a Ctrl-C meant for it must not kill this process first.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    kafka, batch, log_level, log_format = conn.recv()
    configure_logging(log_level, log_format, secrets=kafka.secrets())
    structlog.contextvars.bind_contextvars(
        input_topic=kafka.input_topic, group=kafka.group_id, process="fetcher"
    )
    try:
        fetcher = Fetcher(conn, kafka, batch, depth=batch.prefetch)
    except (TandemError, KafkaError) as error:
        kind = "topic" if isinstance(error, TopicError) else "broker"
        conn.send(("failed", kind, str(error) or repr(error)))
        return 1
    try:
        fetcher.sender.send(("ready",))
        committed = fetcher.run()
        fetcher.close()  # leaving the group may revoke partitions: the daemon is still listening
        fetcher.sender.send(("closed", committed))
    except DaemonGoneError:
        log.warning("fetch_process_orphaned")
        fetcher.orphaned = True
        fetcher.close()
    fetcher.sender.drain()
    return 0


if __name__ == "__main__":
    sys.exit(serve(Connection(int(sys.argv[1]))))
