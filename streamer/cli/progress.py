"""A terminal progress display for ``tandem train``: one bar per autoencoder, losses per epoch.

Rendered by rich on stderr, and only on a terminal; off a terminal each epoch is a structlog
event instead, so logs stay machine-readable.
"""

from __future__ import annotations

from typing import Any

import keras
import structlog
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

log = structlog.get_logger(__name__)


class TrainingProgress(keras.callbacks.Callback):  # type: ignore[misc]
    """Keras callback: a bar per model trained (``ae1``, ``ae2``), advanced each epoch."""

    def __init__(self, epochs: int, console: Console | None = None) -> None:
        super().__init__()
        self.epochs = epochs
        self.console = console or Console(stderr=True)
        self._progress: Progress | None = None
        self._task: Any = None

    def on_train_begin(self, logs: dict[str, float] | None = None) -> None:
        if not self.console.is_terminal:
            return
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[losses]}"),
            TimeElapsedColumn(),
            console=self.console,
        )
        self._progress.start()
        self._task = self._progress.add_task(
            f"training {self.model.name}", total=self.epochs, losses=""
        )

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        logs = logs or {}
        nan = float("nan")
        losses = f"loss {logs.get('loss', nan):.4g}  held-out {logs.get('val_loss', nan):.4g}"
        if self._progress is not None:
            self._progress.update(self._task, completed=epoch + 1, losses=losses)
        else:
            log.debug("epoch_trained", model=self.model.name, epoch=epoch + 1, **logs)

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        if self._progress is not None:
            self._progress.update(self._task, total=self._progress.tasks[0].completed)
            self._progress.stop()
            self._progress = None
