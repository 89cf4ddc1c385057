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
from typing import Any

import orjson
import structlog

log = structlog.get_logger(__name__)


def child_environment(overrides: Mapping[str, str]) -> dict[str, str]:
    """This process's environment plus ``overrides``, TensorFlow's start-up chatter silenced."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **overrides}


class Child:
    """A ``tandem`` command in a child process; a thread per output stream hands each line to
    ``on_stdout`` / ``on_stderr``. Its stderr (the logs) is copied to ``log_path`` and its last
    lines kept for a failure report."""

    def __init__(
        self,
        argv: Sequence[str],
        env: Mapping[str, str],
        cwd: Path,
        log_path: Path,
        on_stdout: Callable[[str], None] | None = None,
        on_stderr: Callable[[str], None] | None = None,
        tail: int = 60,
    ) -> None:
        self.argv = list(argv)
        self.log_path = log_path
        self.stderr_tail: deque[str] = deque(maxlen=tail)
        self._log = log_path.open("w", encoding="utf-8")
        self.process = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            bufsize=1,
        )
        assert self.process.stdout is not None and self.process.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stdout, on_stdout), daemon=True),
            threading.Thread(target=self._read_stderr, args=(on_stderr,), daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _read(stream: Iterable[str], handle: Callable[[str], None] | None) -> None:
        """Hand each line to ``handle``, and keep reading whatever it raises: a reader that
        stopped would leave the child blocked on a full pipe, unable to act on a signal (the
        demo's alert viewer then could not leave its consumer group)."""
        for line in stream:
            if handle is None:
                continue
            try:
                handle(line.rstrip("\n"))
            except Exception as error:
                log.warning("child_output_not_handled", line=line[:200], error=repr(error))

    def _read_stderr(self, handle: Callable[[str], None] | None) -> None:
        assert self.process.stderr is not None
        for raw in self.process.stderr:
            self._log.write(raw)
            self._log.flush()
            line = raw.rstrip("\n")
            self.stderr_tail.append(line)
            if handle is not None:
                handle(line)

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

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
        for reader in self._readers:
            reader.join(timeout=5)
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
        if self.on_log is not None:
            self.on_log(entry)
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
