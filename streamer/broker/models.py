"""New models swapped into a running daemon, between batches (docs/design.md, "Updating a
model").

``[model].bundle`` (or ``--model``) is looked at every ``[model].watch_s`` seconds. Point it at a
symbolic link (``models/pump/current -> v3``) and move the link to roll a new version out: the
daemon loads the bundle it now names, checks it against the stream's codec settings, and swaps it
in between two batches (``Runner.use_model``) with a calibrator fresh from the new bundle's
held-out scores. A bundle that cannot be loaded or checked is refused (logged with the reason,
counted in ``tandem_model_changes_total{outcome="refused"}``) and the running model stays; it is
tried again only once the path names something else or its manifest changes.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from calibration.memory import Memory
from detectors.base import Detector
from streamer.calibrators import build_calibrator, build_memory
from streamer.config import TandemConfig
from streamer.ingest.build import build_input
from streamer.ingest.codec import Codec
from streamer.ingest.readings import Windower
from streamer.metrics import Metrics
from streamer.runner import Runner

log = structlog.get_logger(__name__)

MANIFEST = "bundle.json"


def fingerprint(path: Path) -> tuple[str, int, int] | None:
    """What identifies the bundle ``path`` names now, cheaply (no hashing): the directory it
    resolves to and its manifest's modification time (ns) and size; None when it has none."""
    resolved = Path(path).resolve()
    try:
        stat = (resolved / MANIFEST).stat()
    except OSError:
        return None
    return str(resolved), stat.st_mtime_ns, stat.st_size


class ModelWatch:
    """Notices when ``path`` names another bundle than the one running, at most every
    ``interval_s`` seconds (0: never). Take the fingerprint before loading the first model, so
    a change made while it loads is noticed at the first look."""

    def __init__(
        self, path: Path, interval_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.path, self.interval_s, self.clock = Path(path), interval_s, clock
        self.running = fingerprint(self.path)
        self.refused: tuple[str, int, int] | None = None
        self._looked_at = clock()

    def changed(self) -> tuple[str, int, int] | None:
        """The new bundle's fingerprint when it is time to look and ``path`` names a bundle that
        is neither the running one nor one refused before; else None."""
        if not self.interval_s or self.clock() - self._looked_at < self.interval_s:
            return None
        self._looked_at = self.clock()
        now = fingerprint(self.path)
        if now is None:
            now = (str(self.path.resolve()), -1, -1)  # no manifest (yet): refused once
        return None if now in (self.running, self.refused) else now


@dataclass
class Candidate:
    """A new model loaded and checked, waiting for a gap between batches."""

    found: tuple[str, int, int]
    detector: Detector
    codec: Codec
    calibrator: Any
    model: dict[str, str]
    windower: Windower | None
    memory: Memory | None
    """Built once here: its seed's leave-out distances cost a fraction of a second."""


class ModelSwapper:
    """Loads what ``watch`` notices and swaps it into a runner between batches (module
    docstring); ``poll`` after every batch."""

    def __init__(self, watch: ModelWatch, config: TandemConfig, metrics: Metrics) -> None:
        self.watch, self.config, self.metrics = watch, config, metrics
        self.candidate: Candidate | None = None

    def poll(self, runner: Runner) -> None:
        """Load a newly named bundle (refusing one that fails), and swap a loaded one in when
        the runner can take it."""
        found = self.watch.changed()
        if found is not None:
            self.candidate = self._load(found)
        candidate = self.candidate
        if candidate is None:
            return
        if candidate.detector.version == runner.detector.version:
            log.info("model_unchanged", path=candidate.found[0], version=candidate.model["version"])
        elif not runner.use_model(
            candidate.detector,
            candidate.codec,
            candidate.calibrator,
            candidate.model,
            _changed(runner.windower, candidate.windower),
            candidate.memory,
        ):
            return  # a batch waits for delivery, or a partition replays: after the next batch
        else:
            self.metrics.set_model(candidate.model["name"], candidate.model["version"])
        self.watch.running, self.candidate = candidate.found, None

    def _load(self, found: tuple[str, int, int]) -> Candidate | None:
        """The bundle at ``found`` loaded and checked, or None (refused: logged and counted)."""
        from detectors.registry import load_detector

        path = Path(found[0])
        log.info("model_found", path=str(path))
        try:
            detector = load_detector(path, device=self.config.model.device)
            codec, windower = build_input(detector.feature_names, self.config)
            calibrator = build_calibrator(self.config.calibration, detector.held_out_scores)
            memory = build_memory(self.config.memory, detector.memory_seed, detector.feature_names)
        except Exception as error:  # whatever a bad bundle raises, the running model stays
            log.warning("model_refused", path=str(path), reason=str(error) or repr(error))
            self.metrics.count_model_refused()
            self.watch.refused = found
            return None
        model = {"name": detector.name_, "version": detector.version or "unsaved"}
        return Candidate(found, detector, codec, calibrator, model, windower, memory)


def _changed(running: Windower | None, new: Windower | None) -> Windower | None:
    """``new`` when its windows differ from ``running``'s (None: keep the running buffers, the
    readings they hold make the same windows for the new model)."""
    if running is None or new is None:
        return new
    same = (running.steps, running.channels, running.stride) == (
        new.steps,
        new.channels,
        new.stride,
    )
    return None if same else new
