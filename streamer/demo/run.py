"""One run of ``tandem demo``: the real commands as child processes, in order, and what the
console shows of them.

Generate a sensor feed with labelled anomalies; ``tandem train`` on its clean head; start
``tandem run`` on fresh topics; follow ``tandem alerts``; replay the rest of the feed into the
input topic; once the daemon has committed every window, stop it with SIGTERM; then score the
alerts against the injected anomalies (``streamer.demo.feed.score_alerts``): caught, missed,
false alarms, delays. Each command is printed before it runs, as a person would type it.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from streamer.backtest.events import Event
from streamer.broker.admin import wait_for_broker
from streamer.broker.replay import Pace, ReplayReport, read_alerts, replay, wait_until_committed
from streamer.config import TandemConfig
from streamer.demo.children import AlertFollower, Daemon, child_environment
from streamer.demo.feed import (
    TANDEM,
    DemoFeed,
    DemoScore,
    DemoSizes,
    DemoTopics,
    create_demo_topics,
    delete_demo_topics,
    is_detection,
    make_feed,
    score_alerts,
)
from streamer.ingest.tables import write_table

OK, FAILURE = 0, 1
MAX_ECHOED_WARNINGS = 10


class DemoRun:
    """One run of the demo: its steps in order, and what they print."""

    def __init__(
        self,
        args: argparse.Namespace,
        config: TandemConfig,
        sizes: DemoSizes,
        topics: DemoTopics,
        workdir: Path,
    ) -> None:
        self.args, self.config, self.sizes, self.topics = args, config, sizes, topics
        self.workdir = workdir
        self.options = config.kafka.client_options()
        self.console = Console(highlight=False)
        self.started = time.monotonic()
        self.bundle = workdir / "model"
        self.env = child_environment(
            {
                **topics.environment(),
                "TANDEM_MODEL_BUNDLE": str(self.bundle),
                "TANDEM_METRICS_ENABLED": "false",
                "TANDEM_TRAIN_EPOCHS": str(args.epochs),
                "TANDEM_TRAIN_LEARNING_RATE": str(args.learning_rate),
            }
        )
        self.config_args = ["--config", str(args.config.resolve())] if args.config else []
        self.shown_config = f" --config {args.config}" if args.config else ""
        self.feed: DemoFeed | None = None
        self.announced: set[Event] = set()
        self.last_false: dict[str, int] = {}
        self.step_number = 0
        self.daemon_stop_s = 0.0
        self.daemon_warnings = 0

    def run(self) -> int:
        info = wait_for_broker(self.options, timeout_s=min(self.args.timeout_s, 60.0))
        self.console.print(
            f"[bold]tandem demo[/] against Kafka at {', '.join(info.brokers)} (protocol "
            f"{info.api_version}); run [bold]{self.topics.run_id}[/], work dir {self.workdir}"
        )
        create_demo_topics(self.options, self.topics, self.args.partitions)
        daemon: Daemon | None = None
        follower: AlertFollower | None = None
        try:
            feed = self.feed = self._generate()
            if not self._train():
                return FAILURE
            daemon = self._start_daemon()
            if daemon is None:
                return FAILURE
            follower = self._follow_alerts()
            if not follower.wait_following(timeout_s=30):
                self.console.print("[yellow]tandem alerts has not joined its group after 30 s[/]")
            report = self._replay(feed)
            if not self._wait_for_commits(daemon, report.sent):
                return FAILURE
            if not self._stop_daemon(daemon):
                return FAILURE
            alerts = read_alerts(self.options, self.topics.alerts, self.args.timeout_s)
            shown_all = follower.wait_for((a["alert_id"] for a in alerts), timeout_s=15)
            follower.child.stop(signal.SIGINT, timeout_s=10)
            if not shown_all:
                self.console.print(
                    "[yellow]tandem alerts had not shown every alert when it was stopped; the "
                    "summary counts all of them, read from the topic[/]"
                )
            score = score_alerts(feed, alerts, report)
            return self._summary(score, daemon)
        finally:
            for child in (follower.child if follower else None, daemon.child if daemon else None):
                if child is not None and child.running():
                    child.stop(signal.SIGTERM, timeout_s=30)
            if self.args.keep_topics:
                self.console.print(
                    f"kept topics {self.topics.input}, {self.topics.alerts}, "
                    f"{self.topics.dead_letter}, {self.topics.state}"
                )
            else:
                delete_demo_topics(self.options, self.topics)

    def _step(self, title: str) -> None:
        self.step_number += 1
        elapsed = time.monotonic() - self.started
        self.console.print()
        self.console.rule(f"[bold cyan]{self.step_number}. {title}[/]  [dim]t+{elapsed:.0f}s[/]")

    def _command(self, line: str) -> None:
        self.console.print(f"[bold]$[/] {escape(line)}")

    def _generate(self) -> DemoFeed:
        sizes = self.sizes
        self._step("generate a sensor feed with labelled anomalies")
        feed = make_feed(sizes)
        write_table(feed.frame, self.workdir / "feed.parquet")
        kinds: dict[str, int] = {}
        for event in feed.events:
            kinds[event.kind] = kinds.get(event.kind, 0) + 1
        listing = ", ".join(f"{count} {kind}" for kind, count in kinds.items())
        self.console.print(
            f"feed.parquet: {sizes.keys} sensors x {sizes.steps:,} steps (1 s apart) x "
            f"{sizes.channels} channels, seed {sizes.seed} (the generator of tandem generate)"
        )
        self.console.print(
            f"per sensor: {sizes.train_windows:,} windows of {sizes.window} steps to train on, "
            f"then {sizes.warmup_windows:,} clean windows for the calibrator's warm-up, then "
            f"{sizes.test_steps:,} steps holding the injected anomalies"
        )
        self.console.print(
            f"injected: [bold]{len(feed.events)} anomalies[/] ({listing}); "
            f"{len(feed.replay):,} windows to replay, {feed.normal_windows:,} of them normal"
        )
        return feed

    def _train(self) -> bool:
        sizes = self.sizes
        self._step("train the detector on the clean head of the feed")
        fraction = sizes.train_fraction
        self._command(
            f"tandem train{self.shown_config} --data feed.parquet --window {sizes.window} "
            f"--train-fraction {fraction} --out model --name demo"
        )
        self.console.print(
            f"[dim]with TANDEM_TRAIN_EPOCHS={self.args.epochs} "
            f"TANDEM_TRAIN_LEARNING_RATE={self.args.learning_rate}[/]"
        )
        argv = [
            *_tandem(),
            "--log-format",
            "json",
            "train",
            *self.config_args,
            "--data",
            "feed.parquet",
            "--window",
            str(sizes.window),
            "--train-fraction",
            fraction,
            "--out",
            "model",
            "--name",
            "demo",
        ]
        limit_s = 3 * self.args.timeout_s
        with self.console.status("training AE1, then AE2 on AE1's codes…"):
            try:
                result = subprocess.run(
                    argv,
                    cwd=self.workdir,
                    env=self.env,
                    capture_output=True,
                    text=True,
                    timeout=limit_s,
                    check=False,
                )
            except subprocess.TimeoutExpired as expired:
                stderr = expired.stderr or b""
                text = stderr.decode(errors="replace") if isinstance(stderr, bytes) else stderr
                self._failed(f"tandem train did not finish within {limit_s:g} s", text.splitlines())
                return False
        (self.workdir / "train.log").write_text(result.stderr, encoding="utf-8")
        self.console.out(result.stdout.rstrip("\n"), highlight=False)
        if result.returncode != 0:
            self._failed(f"tandem train exited {result.returncode}", result.stderr.splitlines())
            return False
        return True

    def _start_daemon(self) -> Daemon | None:
        topics, calibration = self.topics, self.config.calibration
        self._step("start the daemon")
        self._command(f"tandem run{self.shown_config}")
        self.console.print(
            f"[dim]with TANDEM_KAFKA_INPUT_TOPIC={topics.input} "
            f"TANDEM_KAFKA_ALERTS_TOPIC={topics.alerts} TANDEM_KAFKA_GROUP_ID={topics.group} "
            f"TANDEM_MODEL_BUNDLE=model (and the dead-letter topic; metrics off)[/]"
        )
        target = (
            f"target false-alarm rate {calibration.target_rate:g}"
            if calibration.method != "quantile"
            else f"quantile {calibration.quantile:g}"
        )
        self.console.print(
            f"calibration: {calibration.method}{' per sensor' if calibration.per_key else ''}, "
            f"{target}, warm-up {calibration.warmup:,} scores, refresh every "
            f"{calibration.refresh} (from \\[calibration])"
        )
        argv = [*_tandem(), "--log-format", "json", "run", *self.config_args]
        argv += ["--broker-wait-s", "30"]
        launched = time.monotonic()
        daemon = Daemon(argv, self.env, self.workdir, on_log=self._daemon_log)
        with self.console.status("loading the model, joining the consumer group…"):
            assigned = daemon.wait_for("partitions_assigned", self.args.timeout_s)
        if not assigned:
            status = daemon.child.stop(signal.SIGTERM, timeout_s=30)
            self._failed(
                f"tandem run (pid {daemon.child.pid}) did not get its partitions "
                f"(exit status {status})",
                daemon.child.stderr_tail,
            )
            return None
        self.console.print(
            f"daemon pid {daemon.child.pid} up and assigned in {time.monotonic() - launched:.1f} s"
        )
        return daemon

    def _daemon_log(self, entry: dict[str, Any]) -> None:
        """Echo the daemon's milestones, and its own warnings and errors (kafka-python's
        transient ones, such as a coordinator still being elected, stay in daemon.log)."""
        name = entry.get("event")
        level = entry.get("level", "info")
        if name == "partitions_assigned":
            parts = ", ".join(str(p).rsplit("/", 1)[-1] for p in entry.get("partitions", []))
            self.console.print(f"[dim]daemon: partitions {parts} assigned[/]")
        elif name == "stopping":
            self.console.print(f"[dim]daemon: stopping on {entry.get('signal', 'a signal')}[/]")
        elif name == "daemon_stopped":
            self.console.print("[dim]daemon: stopped[/]")
        elif level in ("warning", "error", "critical") and not str(
            entry.get("logger", "")
        ).startswith("kafka"):
            self.daemon_warnings += 1
            if self.daemon_warnings <= MAX_ECHOED_WARNINGS:
                fields = {k: v for k, v in entry.items() if k not in ("event", "level")}
                fields.pop("timestamp", None)
                self.console.print(f"[yellow]daemon {level}: {name} {escape(str(fields))}[/]")
            if self.daemon_warnings == MAX_ECHOED_WARNINGS:
                self.console.print("[yellow]daemon: further warnings only in daemon.log[/]")

    def _follow_alerts(self) -> AlertFollower:
        self._step("follow the alerts")
        self._command(f"tandem alerts{self.shown_config} --from-beginning --format jsonl")
        how = (
            "every alert"
            if self.args.all_alerts
            else "the first alert of each injected anomaly and of each burst of false alarms"
        )
        self.console.print(f"[dim]shown below as they arrive: {how}, judged against the labels[/]")
        argv = [*_tandem(), "alerts", *self.config_args, "--from-beginning", "--format", "jsonl"]
        return AlertFollower(argv, self.env, self.workdir, on_alert=self._show_alert)

    def _show_alert(self, alert: dict[str, Any]) -> None:
        assert self.feed is not None
        key, ts = str(alert["key"]), int(alert["event_ts"])
        event = self.feed.event_at(key, ts)
        if not self.args.all_alerts and not is_detection(alert):
            return
        if not self.args.all_alerts:
            if event is not None:
                if event in self.announced:
                    return
                self.announced.add(event)
            else:
                last = self.last_false.get(key)
                self.last_false[key] = ts
                if last is not None and ts - last < self.sizes.window * 1000:
                    return
        when = datetime.fromtimestamp(ts / 1000, UTC).strftime("%H:%M:%S")
        top = alert["top_features"][0] if alert["top_features"] else {"name": "-", "share": 0.0}
        blame = f"{top['name']} {top['share']:.0%}"
        threshold = float(alert["threshold"])
        shown = f"{threshold:.2f}" if threshold < 1000 else f"{threshold:.1e}"
        if event is None:
            verdict = "[red]false alarm[/]"
        else:
            verdict = f"[green]{event.kind}[/] +{(ts - event.start_ms) / 1000:.0f} s"
        self.console.print(
            f"  {when}  {escape(key):<10} {alert['score']:>6.2f} > {shown:<7} "
            f"{escape(blame):<14} {verdict}"
        )

    def _replay(self, feed: DemoFeed) -> ReplayReport:
        self._step("replay the feed into the input topic")
        pace = Pace(rate=self.args.rate)
        self.console.print(
            f"{len(feed.replay):,} windows, keyed by sensor, stamped with their own time, "
            f"{pace.describe()}, into {self.topics.input} ({self.args.partitions} partitions)"
        )
        day = datetime.fromtimestamp(int(feed.replay.ts_ms[0]) / 1000, UTC).strftime("%Y-%m-%d")
        self.console.print(
            f"[bold]  {'time':<8}  {'sensor':<10} {'score':>6} > {'thresh.':<7} "
            f"{'most blamed':<14} anomaly hit, delay[/]  [dim](sensor time, {day} UTC)[/]"
        )
        report = replay(self.config.kafka, self.topics.input, feed.replay, pace)
        self.console.print(
            f"replayed {report.sent:,} windows in {report.seconds:.1f} s, all acknowledged; "
            f"per partition {report.per_partition}"
        )
        return report

    def _wait_for_commits(self, daemon: Daemon, total: int) -> bool:
        waited = time.monotonic()
        with self.console.status("waiting for the daemon to commit every window…"):
            done = wait_until_committed(
                self.options,
                self.topics.group,
                self.topics.input,
                total,
                alive=daemon.child.running,
                timeout_s=self.args.timeout_s,
            )
        if done < total:
            status = daemon.child.process.poll()
            state = "exited" if status is not None else "is still running"
            self._failed(
                f"the daemon {state} (status {status}) with {done:,} of {total:,} windows "
                f"committed",
                daemon.child.stderr_tail,
            )
            return False
        self.console.print(
            f"group {self.topics.group} has committed all {total:,} windows "
            f"({time.monotonic() - waited:.1f} s after the last was acknowledged)"
        )
        return True

    def _stop_daemon(self, daemon: Daemon) -> bool:
        self._step("stop the daemon")
        self._command(f"kill -TERM {daemon.child.pid}")
        asked = time.monotonic()
        status = daemon.child.stop(signal.SIGTERM, timeout_s=self.args.timeout_s)
        seconds = time.monotonic() - asked
        if status != 0 or not daemon.logged("daemon_stopped"):
            self._failed(
                f"tandem run exited {status} {seconds:.1f} s after SIGTERM",
                daemon.child.stderr_tail,
            )
            return False
        self.daemon_stop_s = seconds
        self.console.print(f"tandem run finished its batch and exited 0 in {seconds:.1f} s")
        return True

    def _summary(self, score: DemoScore, daemon: Daemon) -> int:
        calibration = self.config.calibration
        self._step("what was caught")
        table = Table(title="injected anomalies and the alerts on them")
        for column in ("kind", "injected", "caught", "missed", "delay: median", "max"):
            table.add_column(column, justify="left" if column == "kind" else "right")
        for kind in score.kinds:
            table.add_row(
                kind.kind,
                str(kind.injected),
                str(kind.caught),
                str(kind.injected - kind.caught),
                *_delays(kind.delays_ms),
            )
        table.add_section()
        table.add_row(
            "all",
            str(score.events),
            str(score.caught),
            str(score.missed),
            *_delays(score.delays_ms),
            style="bold",
        )
        self.console.print(table)
        self.console.print(
            "[dim]an anomaly counts as caught once when any alert falls on a window holding one "
            "of its steps; the delay is from its first step to the first such window's last "
            "step, in seconds of sensor time[/]"
        )
        on_anomalies = score.alerts - score.false_alarms
        told = "alert events" if self.config.alerts.mode == "events" else "window alerts"
        self.console.print(
            f"{told}: {score.alerts:,} in all, {on_anomalies:,} on injected anomalies (at most "
            f"{score.most_per_anomaly} on one) and {score.false_alarms:,} false alarms (on none)"
        )
        expected = (
            f"; the calibrator aims at {calibration.target_rate * 1e4:g}"
            if calibration.method != "quantile"
            else ""
        )
        self.console.print(
            f"false alarms: {score.false_alarms:,} in {score.normal_windows:,} normal windows = "
            f"{score.false_alarms_per_10k:.1f} per 10,000{expected}"
        )
        if score.latencies_ms:
            p50, p95 = np.percentile(score.latencies_ms, [50, 95]) / 1000
            self.console.print(
                f"alert latency (window handed to the producer → alert built by the daemon): "
                f"median {p50:.2f} s, 95th percentile {p95:.2f} s"
            )
        counts = daemon.counts
        self.console.print(
            f"daemon: {counts['records']:,} windows in {counts['batches']:,} batches, "
            f"{counts['dead_letters']:,} dead letters, {counts['alerts']:,} alerts published; "
            f"SIGTERM → exit 0 in {self.daemon_stop_s:.1f} s"
        )
        caught = score.caught
        colour = "green" if caught else "red"
        self.console.print(
            f"[bold {colour}]caught {caught} of {score.events} injected anomalies, "
            f"{score.false_alarms} false alarms "
            f"({score.false_alarms_per_10k:.1f} per 10,000 normal windows)[/]"
        )
        self.console.print(f"demo finished in {time.monotonic() - self.started:.0f} s")
        if caught == 0:
            self.console.print("[red]no injected anomaly was caught: the demo failed[/]")
            return FAILURE
        return OK

    def _failed(self, what: str, tail: Any) -> None:
        self.console.print(f"[bold red]{escape(what)}[/]")
        lines = list(tail)[-40:]
        if lines:
            self.console.print("[dim]--- its stderr (tail) ---[/]")
            for line in lines:
                self.console.out(line, highlight=False)


def _tandem() -> list[str]:
    return list(TANDEM)


def _delays(delays_ms: list[int]) -> tuple[str, str]:
    if not delays_ms:
        return "-", "-"
    return f"{np.median(delays_ms) / 1000:.0f} s", f"{max(delays_ms) / 1000:.0f} s"
