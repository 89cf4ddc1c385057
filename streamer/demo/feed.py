"""The end-to-end demo's parts: a labelled feed, fresh topics, the real commands as child
processes, the replay, and the score of the alerts against the injected anomalies.

The demo (``tandem demo``, ``streamer/cli/demo.py``) runs the commands a deployment runs:
``tandem train`` on the clean head of a generated sensor feed, ``tandem run`` on the rest as it
is replayed into a fresh input topic, and ``tandem alerts`` to follow what the daemon publishes.
Nothing here prints; the command says what happens.

The feed, per sensor, in time order (``DemoSizes``):

    [ train_windows windows: training ][ warmup_windows: clean, calibration warm-up ][ test_steps
      steps with labelled anomalies ]

Only the last two parts are replayed, so each sensor's calibrator has warmed up on normal scores
before the first anomaly arrives. An injected anomaly is an *event*: a run of anomalous steps of
one sensor. A window is stamped with its last step and contains an anomalous step if its stamp
lies between the event's first step and ``window - 1`` steps after its last (``Event.covers``);
an alert on such a window catches the event, an alert on no event's window is a false alarm.
"""

from __future__ import annotations

import math
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import structlog
from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from streamer.backtest.events import Event
from streamer.broker.admin import NO_TIME_RETENTION, TopicSpec, create_topics, delete_topics
from streamer.broker.replay import ReplayReport
from streamer.client_config import kafka_python_options
from streamer.config import CalibrationConfig, KafkaConfig
from streamer.demo.synthetic import injected_events, sensor_series
from streamer.ingest.tables import WindowTable, windows_from_frame

log = structlog.get_logger(__name__)


SAMPLE_INTERVAL_MS = 1_000
"""One step of the generated series is one second of sensor time."""

TANDEM = (sys.executable, "-m", "streamer")
"""How the demo starts the ``tandem`` command: this interpreter, so the same environment."""


@dataclass(frozen=True)
class DemoSizes:
    """How much data: per sensor, ``train_windows`` windows to train on, ``warmup_windows`` clean
    windows replayed first (the calibration warm-up), then ``test_steps`` steps holding about
    ``anomaly_rate`` anomalous steps. Windows are ``window`` steps of ``channels`` readings."""

    keys: int = 4
    channels: int = 4
    window: int = 16
    train_windows: int = 1_500
    warmup_windows: int = 1_024
    test_steps: int = 2_500
    anomaly_rate: float = 0.04
    seed: int = 0

    def __post_init__(self) -> None:
        if min(self.keys, self.channels, self.window) < 1:
            raise ValueError("keys, channels and window must be at least 1")
        if min(self.train_windows, self.warmup_windows, self.test_steps) < 1:
            raise ValueError("train_windows, warmup_windows and test_steps must be at least 1")

    @property
    def steps(self) -> int:
        """Steps per sensor."""
        return self.window - 1 + self.train_windows + self.warmup_windows + self.test_steps

    @property
    def clean_steps(self) -> int:
        """Leading steps of each sensor without anomalies: training and warm-up windows."""
        return self.window - 1 + self.train_windows + self.warmup_windows

    @property
    def train_fraction(self) -> str:
        """``tandem train --train-fraction``: the share of each sensor's windows trained on, in
        the fewest decimals that still select exactly ``train_windows`` of them."""
        windows = self.steps - self.window + 1
        for digits in range(2, 18):
            shown = f"{self.train_windows / windows:.{digits}f}"
            if round(windows * float(shown)) == self.train_windows:
                return shown
        return repr(self.train_windows / windows)


def warmup_windows_for(calibration: CalibrationConfig, keys: int) -> int:
    """Clean windows per sensor to replay before the anomalies, so that every threshold the
    calibrator uses is set (after ``warmup`` accepted scores, at a refresh boundary) before the
    first anomaly: a per-key state sees only its sensor's windows, a global one all of them."""
    per_state = calibration.warmup if calibration.per_key else math.ceil(calibration.warmup / keys)
    return math.ceil(per_state / calibration.refresh) * calibration.refresh


def covered_until(event: Event, window: int, interval_ms: int = SAMPLE_INTERVAL_MS) -> int:
    """The stamp (epoch ms) of the last window of ``window`` steps holding a step of ``event``:
    its windows are stamped ``event.start_ms`` to this."""
    return event.end_ms + (window - 1) * interval_ms


@dataclass(frozen=True)
class DemoFeed:
    """The generated feed: ``frame`` (the step series), the ``replay`` windows (everything after
    the training windows, in time order) and the injected ``events``."""

    sizes: DemoSizes
    frame: pd.DataFrame
    replay: WindowTable
    events: list[Event]
    _by_key: dict[str, list[Event]] = field(repr=False, default_factory=dict)

    def event_at(self, key: str, event_ts: int) -> Event | None:
        """The event whose window ``(key, event_ts)`` is (the first, if two overlap), or None."""
        for event in self._by_key.get(key, ()):
            if event.start_ms <= event_ts <= covered_until(event, self.sizes.window):
                return event
        return None

    @property
    def normal_windows(self) -> int:
        """Replayed windows holding no anomalous step."""
        assert self.replay.labels is not None
        return int((self.replay.labels == 0).sum())


def make_feed(sizes: DemoSizes) -> DemoFeed:
    """Generate the series (``tandem generate``'s generator) and cut it into windows."""
    frame = sensor_series(
        sizes.steps,
        n_keys=sizes.keys,
        channels=sizes.channels,
        anomaly_rate=sizes.anomaly_rate,
        clean_fraction=sizes.clean_steps / sizes.steps,
        seed=sizes.seed,
        sample_interval_ms=SAMPLE_INTERVAL_MS,
    )
    table = windows_from_frame(frame, sizes.window, source="generated feed")
    replay = table.select(~table.head_per_key(float(sizes.train_fraction)))
    events = injected_events(frame)
    by_key: dict[str, list[Event]] = {}
    for event in events:
        by_key.setdefault(event.key, []).append(event)
    return DemoFeed(sizes, frame, replay, events, by_key)


@dataclass(frozen=True)
class DemoTopics:
    """The run's own topics and consumer group, named after the configured ones plus a run id."""

    run_id: str
    input: str
    alerts: str
    dead_letter: str
    group: str

    @classmethod
    def fresh(cls, kafka: KafkaConfig) -> DemoTopics:
        run_id = uuid.uuid4().hex[:8]
        suffix = f".demo-{run_id}"
        return cls(
            run_id=run_id,
            input=kafka.input_topic + suffix,
            alerts=kafka.alerts_topic + suffix,
            dead_letter=kafka.dead_letter_topic + suffix,
            group=kafka.group_id + suffix,
        )

    @property
    def state(self) -> str:
        """The daemon's checkpoint topic."""
        return KafkaConfig(group_id=self.group).state_topic

    def environment(self) -> dict[str, str]:
        """``TANDEM_KAFKA_*`` overrides that point a ``tandem`` command at these topics."""
        return {
            "TANDEM_KAFKA_INPUT_TOPIC": self.input,
            "TANDEM_KAFKA_ALERTS_TOPIC": self.alerts,
            "TANDEM_KAFKA_DEAD_LETTER_TOPIC": self.dead_letter,
            "TANDEM_KAFKA_GROUP_ID": self.group,
            "TANDEM_KAFKA_AUTO_OFFSET_RESET": "earliest",
        }


def create_demo_topics(options: Mapping[str, Any], topics: DemoTopics, partitions: int) -> None:
    """Create the input topic with ``partitions`` partitions (and no time-based retention: the
    replayed records carry the feed's timestamps, which may be older than the broker's
    retention), and the alerts and dead-letter topics."""
    create_topics(
        options,
        [
            TopicSpec(topics.input, partitions, configs=NO_TIME_RETENTION),
            TopicSpec(topics.alerts, 1),
            TopicSpec(topics.dead_letter, 1),
        ],
    )


def delete_demo_topics(
    options: Mapping[str, Any], topics: DemoTopics, attempts: int = 30, pause_s: float = 1.0
) -> None:
    """Delete the run's topics, and its consumer group (the daemon's; the alert viewer reads
    without one).

    Groups are listed and deleted until none is left (at most ``attempts`` times, ``pause_s``
    apart): the broker refuses to delete a group while a member stopped a moment ago is still
    in it. (The viewer used to have a group of its own, which CI once found left behind.)"""
    delete_topics(options, [topics.input, topics.alerts, topics.dead_letter, topics.state])
    admin = KafkaAdminClient(**kafka_python_options(KafkaAdminClient, options))
    failed: dict[str, Any] = {}
    try:
        for _ in range(attempts):
            groups = [
                str(group["group_id"])
                for group in admin.list_groups()
                if str(group["group_id"]).startswith(topics.group)
            ]
            if not groups:
                return
            failed = {
                name: error
                for name, error in admin.delete_groups(groups).items()
                if error not in (None, "OK")
            }
            time.sleep(pause_s)
        log.warning("demo_groups_not_deleted", groups=failed or groups)
    except KafkaError as error:
        log.warning("demo_groups_not_deleted", group=topics.group, error=repr(error))
    finally:
        admin.close()


@dataclass(frozen=True)
class KindScore:
    """Events of one anomaly kind: how many, how many caught, and each caught one's delay (ms of
    sensor time from its first anomalous step to the first flagged window)."""

    kind: str
    injected: int
    caught: int
    delays_ms: list[int]


@dataclass(frozen=True)
class DemoScore:
    """The alerts held against the injected events.

    ``alerts`` counts detections: each alert event's ``opened`` record (or, in windows mode,
    each window alert). An injected anomaly is caught once when any detection falls on one of its
    windows; a detection on no anomaly's window is a false alarm. ``most_per_anomaly``: the
    most detections on one anomaly. ``latencies_ms`` are, per detection, wall-clock milliseconds
    from the replay handing its window to the producer to the daemon building the record.
    """

    kinds: list[KindScore]
    alerts: int
    false_alarms: int
    windows: int
    normal_windows: int
    latencies_ms: list[float]
    most_per_anomaly: int = 0

    @property
    def events(self) -> int:
        return sum(kind.injected for kind in self.kinds)

    @property
    def caught(self) -> int:
        return sum(kind.caught for kind in self.kinds)

    @property
    def missed(self) -> int:
        return self.events - self.caught

    @property
    def delays_ms(self) -> list[int]:
        return [delay for kind in self.kinds for delay in kind.delays_ms]

    @property
    def false_alarms_per_10k(self) -> float:
        """False alarms per 10,000 normal windows."""
        return 1e4 * self.false_alarms / self.normal_windows if self.normal_windows else 0.0


def score_alerts(
    feed: DemoFeed, alerts: Sequence[Mapping[str, Any]], replay: ReplayReport | None = None
) -> DemoScore:
    """Match each detection (``is_detection``) to the injected anomaly whose window it flags (by
    key and ``event_ts``)."""
    alerts = [alert for alert in alerts if is_detection(alert)]
    first_alert: dict[Event, int] = {}
    per_anomaly: dict[Event, int] = {}
    false_alarms = 0
    for alert in alerts:
        event = feed.event_at(str(alert["key"]), int(alert["event_ts"]))
        if event is None:
            false_alarms += 1
        else:
            ts = int(alert["event_ts"])
            first_alert[event] = min(first_alert.get(event, ts), ts)
            per_anomaly[event] = per_anomaly.get(event, 0) + 1
    kinds = []
    for kind in sorted({event.kind for event in feed.events}):
        of_kind = [event for event in feed.events if event.kind == kind]
        delays = [first_alert[e] - e.start_ms for e in of_kind if e in first_alert]
        kinds.append(KindScore(kind, len(of_kind), len(delays), delays))
    return DemoScore(
        kinds=kinds,
        alerts=len(alerts),
        false_alarms=false_alarms,
        windows=len(feed.replay),
        normal_windows=feed.normal_windows,
        latencies_ms=_latencies(feed, alerts, replay),
        most_per_anomaly=max(per_anomaly.values(), default=0),
    )


def is_detection(alert: Mapping[str, Any]) -> bool:
    """Whether an alert record tells of a new anomaly: an event's ``opened`` record, or a window
    alert (the ``updated`` and ``closed`` records follow one already told)."""
    return alert.get("type", "window") in ("opened", "window")


def _latencies(
    feed: DemoFeed, alerts: Sequence[Mapping[str, Any]], replay: ReplayReport | None
) -> list[float]:
    if replay is None or replay.sent != len(feed.replay):
        return []
    row_of = {
        (key, ts): row
        for row, (key, ts) in enumerate(
            zip(feed.replay.keys.tolist(), feed.replay.ts_ms.tolist(), strict=True)
        )
    }
    latencies = []
    for alert in alerts:
        row = row_of.get((str(alert["key"]), int(alert["event_ts"])))
        if row is not None:
            latencies.append(float(alert["detected_ts"]) - float(replay.sent_ms[row]))
    return latencies
