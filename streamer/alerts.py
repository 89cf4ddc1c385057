"""Alert records (``schemas/alert-v2.schema.json``): in ``windows`` mode one per flagged window,
built here; in ``events`` mode the opened/updated/closed records of ``streamer.events``.

A window record's id is its window's source position (``topic/partition/offset``), so a window
delivered twice (after a crash before commit) yields the same id and subscribers can drop the
duplicate.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from numpy.typing import NDArray

from calibration.base import Flags
from detectors.base import Scores
from streamer.records import SourceRecord, WindowBatch

TOP_FEATURES = 3
SCHEMA_VERSION = 2
"""The ``schema`` field of every record; ``schemas/alert-v2.schema.json`` describes it."""


@dataclass(frozen=True)
class Alert:
    """One alert: the record key (entity) and the JSON value, ready to produce."""

    alert_id: str
    key: str
    body: Mapping[str, Any]

    def value(self) -> bytes:
        return orjson.dumps(self.body)


def build_alerts(
    batch: WindowBatch,
    scores: Scores,
    flags: Flags,
    feature_names: tuple[str, ...],
    model: Mapping[str, str],
    calibrator: Mapping[str, Any],
    detected_ms: int | None = None,
) -> list[Alert]:
    """Alerts for the flagged windows of ``batch``, in stream order; blame is computed only for
    them. ``model`` is ``{"name", "version"}``, ``calibrator`` its method and target."""
    rows = np.flatnonzero(flags.flags)
    if len(rows) == 0:
        return []
    detected = int(time.time() * 1000) if detected_ms is None else detected_ms
    blame = scores.contributions(rows)
    kinds = scores.kinds(rows)
    alerts = []
    for i, (row, shares) in enumerate(zip(rows.tolist(), blame, strict=True)):
        record = batch.records[row]
        key = str(batch.keys[row])
        body = {
            "schema": SCHEMA_VERSION,
            "type": "window",
            "alert_id": record.position,
            "key": key,
            "event_ts": int(batch.ts_ms[row]),
            "detected_ts": detected,
            "score": float(scores.score[row]),
            "threshold": float(flags.thresholds[row]),
            "parts": {name: float(part[row]) for name, part in scores.parts.items()},
            "top_features": top_features(shares, feature_names),
            "source": source_of(record),
            "model": dict(model),
            "calibrator": dict(calibrator),
        }
        surprise = surprise_of(flags, row)
        if surprise is not None:
            body["surprise"] = surprise
        if kinds is not None:
            body["kind"] = kinds[0][i]
            body["kind_confidence"] = round(float(kinds[1][i]), 4)
        alerts.append(Alert(alert_id=record.position, key=key, body=body))
    return alerts


def top_features(shares: NDArray[np.floating], names: tuple[str, ...]) -> list[dict[str, Any]]:
    """The ``TOP_FEATURES`` largest of (D,) blame ``shares`` (they sum to 1), largest first."""
    top = np.argsort(shares)[::-1][:TOP_FEATURES]
    return [
        {"name": names[i], "index": int(i), "share": round(float(shares[i]), 6)}
        for i in top.tolist()
    ]


def source_of(record: SourceRecord) -> dict[str, Any]:
    """The ``source`` object of a record: where its window came from."""
    return {"topic": record.topic, "partition": record.partition, "offset": record.offset}


def surprise_of(flags: Flags, row: int) -> float | None:
    """Window ``row``'s surprise (``-log10`` of its tail probability, ``calibration``); None
    while the calibrator is warming up or gives none."""
    value = float(flags.surprise[row])
    return round(value, 4) if np.isfinite(value) else None
