"""``tandem`` commands as child processes: their output read line by line on threads, their
logs kept, and the daemon and the alert follower as the demo drives them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import orjson
import structlog

log = structlog.get_logger(__name__)


def child_environment(overrides: Mapping[str, str], unset: Iterable[str] = ()) -> dict[str, str]:
    """This process's environment less ``unset``, plus ``overrides``, TensorFlow's start-up
    chatter silenced."""
    dropped = set(unset)
    inherited = {name: value for name, value in os.environ.items() if name not in dropped}
    return {**inherited, "TF_CPP_MIN_LOG_LEVEL": "3", **overrides}


class Child:
    """A ``tandem`` command in a child process; a thread per output stream hands each line to
    ``on_stdout`` / ``on_stderr``. Its stderr (the logs) is copied to ``log_path`` line by line,
    flushed, so the file can be read while the child runs, and its last lines kept for a failure
    report. With ``merge_output`` its stdout goes the same way, in order: to the log and to
    ``on_stderr``."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
        on_stdout: Callable[[str], None] | None = None,
        on_stderr: Callable[[str], None] | None = None,
        tail: int = 60,
        merge_output: bool = False,
    ) -> None:
        if merge_output and on_stdout is not None:
            raise ValueError("merged output goes to on_stderr; on_stdout would never be called")
        self.argv = list(argv)
        self.log_path = log_path
        self.stderr_tail: deque[str] = deque(maxlen=tail)
        self._log = log_path.open("w", encoding="utf-8")
        try:
            self.process = subprocess.Popen(
                self.argv,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT if merge_output else subprocess.PIPE,
                text=True,
                encoding="utf-8",
                errors="replace",  # an undecodable byte must not end a reader
                bufsize=1,
            )
        except BaseException:
            self._log.close()
            raise
        streams: list[tuple[IO[str] | None, Callable[[str], None] | None, bool]] = [
            (self.process.stdout, on_stderr if merge_output else on_stdout, merge_output),
            (self.process.stderr, on_stderr, True),
        ]
        self._readers = [
            threading.Thread(target=self._read, args=(stream, handle, logged), daemon=True)
            for stream, handle, logged in streams
            if stream is not None
        ]
        for reader in self._readers:
            reader.start()

    def _read(
        self, stream: Iterable[str], handle: Callable[[str], None] | None, logged: bool
    ) -> None:
        """Log each line when ``logged``, hand it to ``handle``, and keep reading whatever
        either raises: a reader that stopped would leave the child blocked on a full pipe,
        unable to act on a signal (the demo's alert viewer then could not leave its consumer
        group)."""
        for raw in stream:
            line = raw.rstrip("\n")
            try:
                if logged:
                    self.stderr_tail.append(line)
                    self._log.write(raw)
                    self._log.flush()
                if handle is not None:
                    handle(line)
            except Exception as error:
                log.warning("child_output_not_handled", line=line[:200], error=repr(error))

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def drain(self, timeout_s: float = 5.0) -> None:
        """Wait (up to ``timeout_s`` a stream) until its output has been read to the end, as it
        will be soon after the child exits: what it wrote is then all in the log."""
        for reader in self._readers:
            reader.join(timeout=timeout_s)

    def stop(self, sig: signal.Signals, timeout_s: float) -> int:
        """Send ``sig``, wait up to ``timeout_s`` for the exit (then kill it); the exit status.
        Both output streams have been read to the end when this returns."""
        if self.running():
            self.process.send_signal(sig)
        try:
            status = self.process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            status = self.process.wait()
        self.drain()
        self._log.close()
        return status


class Daemon:
    """``tandem run`` as a child process, logging JSON lines; counts what its batches did.

    ``on_log`` receives every parsed log event (dicts with ``event`` and ``level``).
    """

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        on_log: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.on_log = on_log
        self.counts: Counter[str] = Counter()
        self._seen: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self.child = Child(argv, env, cwd, cwd / "daemon.log", on_stderr=self._log_line)

    def _flag(self, name: str) -> threading.Event:
        with self._lock:
            return self._seen.setdefault(name, threading.Event())

    def _log_line(self, line: str) -> None:
        if not line.startswith("{"):
            return
        try:
            entry = json.loads(line)
        except ValueError:
            return
        if not isinstance(entry, dict):
            return
        name = str(entry.get("event", ""))
        if name == "batch_scored":
            self.counts["batches"] += 1
            for count in ("records", "scored", "alerts", "dead_letters"):
                self.counts[count] += int(entry.get(count, 0))
        try:
            if self.on_log is not None:
                self.on_log(entry)
        finally:
            self._flag(name).set()

    def logged(self, name: str) -> bool:
        return self._flag(name).is_set()

    def wait_for(self, name: str, timeout_s: float) -> bool:
        """Wait until the daemon logs event ``name``; False if it exits or time runs out first."""
        flag = self._flag(name)
        deadline = time.monotonic() + timeout_s
        while not flag.wait(timeout=0.2):
            if not self.child.running() or time.monotonic() > deadline:
                return flag.is_set()
        return True


class AlertFollower:
    """``tandem alerts --from-beginning --format jsonl`` as a child process: each alert it prints
    (duplicates already dropped by the command) goes to ``on_alert`` as it arrives."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        on_alert: Callable[[dict[str, Any]], None],
    ) -> None:
        self.on_alert = on_alert
        self.ids: set[str] = set()
        self._lock = threading.Lock()
        self._following = threading.Event()
        self.child = Child(
            argv, env, cwd, cwd / "alerts.log", on_stdout=self._line, on_stderr=self._log_line
        )

    def _log_line(self, line: str) -> None:
        if "alerts_following" in line:
            self._following.set()

    def wait_following(self, timeout_s: float) -> bool:
        """Wait until the viewer has joined its group and been given the alerts topic's
        partitions (its ``alerts_following`` event); False on timeout. Stopping a viewer still
        joining leaves a member behind that keeps its group from being deleted."""
        return self._following.wait(timeout_s)

    def _line(self, line: str) -> None:
        if not line.startswith("{"):
            return
        alert = orjson.loads(line)
        with self._lock:
            self.ids.add(str(alert["alert_id"]))
        self.on_alert(alert)

    def wait_for(self, ids: Iterable[str], timeout_s: float) -> bool:
        """Wait until every alert id in ``ids`` has come through; False on timeout or exit."""
        wanted = set(ids)
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                if wanted <= self.ids:
                    return True
            if not self.child.running() or time.monotonic() > deadline:
                return False
            time.sleep(0.1)
