"""Alerts from real scores and flags, checked against the published JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest

from calibration.quantile import RollingQuantile
from detectors.cascade import CascadeDetector
from streamer.alerts import build_alerts
from streamer.ingest.codec import JsonCodec, Limits
from streamer.records import SourceRecord

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "schemas" / "alert-v2.schema.json").read_text()
)


@pytest.fixture
def detector(tiny_detector: CascadeDetector) -> CascadeDetector:
    return tiny_detector


def test_flagged_windows_become_schema_valid_alerts(detector: CascadeDetector) -> None:
    rng = np.random.default_rng(1)
    windows = rng.normal(size=(400, 8)).astype(np.float32)
    windows[[150, 300]] += 40.0
    codec = JsonCodec(Limits(window_length=8))
    records = [
        SourceRecord(
            "feed",
            i % 3,
            1000 + i,
            f"s{i % 5}".encode(),
            codec.encode(f"s{i % 5}", 1_764_000_000_000 + i, w),
            0,
        )
        for i, w in enumerate(windows)
    ]
    batch, dead = codec.decode(records)
    assert dead == []
    scores = detector.score(batch.windows)
    calibrator = RollingQuantile(0.9, window=200, warmup=100, refresh=10)
    flags = calibrator.update(batch.keys, scores.score)
    assert detector.version is not None
    alerts = build_alerts(
        batch,
        scores,
        flags,
        detector.feature_names,
        model={"name": "tiny", "version": detector.version},
        calibrator={"method": "quantile", "quantile": 0.9},
        detected_ms=1_764_000_999_000,
    )
    assert len(alerts) == int(flags.flags.sum()) > 0
    assert {"feed/0/1150", "feed/0/1300"} <= {a.alert_id for a in alerts}, (
        "the injected windows alert"
    )
    for alert in alerts:
        body = orjson.loads(alert.value())
        jsonschema.validate(body, SCHEMA)
        assert body["score"] > body["threshold"]
        assert sum(body["parts"].values()) == pytest.approx(body["score"], rel=1e-5)
        shares = [f["share"] for f in body["top_features"]]
        assert shares == sorted(shares, reverse=True) and len(shares) == 3
        assert body["top_features"][0]["name"] == f"x{body['top_features'][0]['index']}"
        source = body["source"]
        assert alert.alert_id == f"{source['topic']}/{source['partition']}/{source['offset']}"


def test_no_flags_no_alerts(detector: CascadeDetector) -> None:
    windows = np.zeros((3, 8), np.float32)
    codec = JsonCodec(Limits(window_length=8))
    batch, _ = codec.decode(
        [
            SourceRecord("feed", 0, i, b"k", codec.encode("k", i, w), 0)
            for i, w in enumerate(windows)
        ]
    )
    flags = RollingQuantile(0.9, window=100, warmup=50, refresh=10).update(
        batch.keys, detector.score(batch.windows).score
    )
    assert (
        build_alerts(batch, detector.score(batch.windows), flags, detector.feature_names, {}, {})
        == []
    )
