"""Terminal progress for ``tandem train`` (a bar per model and its losses) and ``tandem backtest``.

Both draw one rich bar on stderr, and only on a terminal (``TerminalBar``); off a terminal they
emit structlog events instead, so logs stay machine-readable: ``epoch_trained`` per epoch (debug)
and ``backtest_progress`` per tenth of the records.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import structlog
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

log = structlog.get_logger(__name__)


class TerminalBar:
    """One rich bar on ``console`` while it is a terminal: description, bar, done/total, a note
    and a timer column (``timer``: elapsed or remaining time). Elsewhere it draws nothing and
    ``shown`` stays false, so its user logs events instead."""

    def __init__(self, console: Console, timer: Callable[[], ProgressColumn]) -> None:
        self.console = console
        self._timer = timer
        self._progress: Progress | None = None
        self._task = TaskID(0)

    @property
    def shown(self) -> bool:
        return self._progress is not None

    def start(self, description: str, total: int) -> None:
        """Draw a new bar of ``total`` steps, if on a terminal."""
        if not self.console.is_terminal:
            return
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            self._timer(),  # a fresh column: rich caches renderings per task id
            console=self.console,
        )
        self._progress.start()
        self._task = self._progress.add_task(description, total=total, note="")

    def update(self, completed: int, note: str = "") -> None:
        """Show ``completed`` steps done, and ``note`` beside the bar."""
        if self._progress is not None:
            self._progress.update(self._task, completed=completed, note=note)

    def stop(self, *, close_total: bool = False) -> None:
        """Stop drawing; ``close_total`` first ends the bar at the steps done (training that
        stopped early shows a full bar)."""
        if self._progress is None:
            return
        if close_total:
            self._progress.update(self._task, total=self._progress.tasks[0].completed)
        self._progress.stop()
        self._progress = None


class TrainingProgress(keras.callbacks.Callback):  # type: ignore[misc]
    """Keras callback: a bar per model trained (``ae1``, ``ae2``, ``fuser``), advanced each
    epoch with its training and held-out losses."""

    def __init__(self, epochs: int, console: Console | None = None) -> None:
        super().__init__()
        self.epochs = epochs
        self.console = console or Console(stderr=True)
        self._bar = TerminalBar(self.console, TimeElapsedColumn)

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        self._bar.start(f"training {self.model.name}", self.epochs)

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        if self._bar.shown:
            self._bar.update(epoch + 1, _losses(logs))
        else:
            log.debug("epoch_trained", model=self.model.name, epoch=epoch + 1, **logs)

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        self._bar.stop(close_total=True)


class ScoringProgress:
    """``with ScoringProgress(console, total) as advance``: ``advance(records)`` after each batch
    of a backtest of ``total`` records; a ``scoring`` bar with the time remaining on a terminal,
    elsewhere a ``backtest_progress`` event per tenth of the records, on ``logger`` (the
    command's own, so the event keeps its logger name)."""

    def __init__(self, console: Console, total: int, logger: Any = log) -> None:
        self.total, self.done, self.logged = total, 0, 0
        self._bar = TerminalBar(console, TimeRemainingColumn)
        self._log = logger

    def __enter__(self) -> Callable[[int], None]:
        self._bar.start("scoring", self.total)
        return self.advance

    def advance(self, records: int) -> None:
        self.done += records
        if self._bar.shown:
            self._bar.update(self.done)
        elif self.total and self.done * 10 // self.total > self.logged:
            self.logged = self.done * 10 // self.total
            self._log.info("backtest_progress", records=self.done, total=self.total)

    def __exit__(self, *exc: object) -> None:
        self._bar.stop()


def _losses(logs: dict[str, Any]) -> str:
    """An epoch's note: its training and held-out mean squared errors."""
    nan = float("nan")
    return f"loss {logs.get('loss', nan):.4g}  held-out {logs.get('val_loss', nan):.4g}"
