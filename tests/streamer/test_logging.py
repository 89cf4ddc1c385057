"""Logging setup: JSON lines off a terminal, UTC ISO timestamps, context, stdlib routed through."""

from __future__ import annotations

import io
import logging
from datetime import datetime

import orjson
import pytest
import structlog

from streamer.logging import configure_logging


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in stream.getvalue().splitlines()]


def test_json_lines_with_utc_iso_timestamps_and_bound_context() -> None:
    stream = io.StringIO()
    configure_logging(level="info", fmt="auto", stream=stream)
    structlog.contextvars.bind_contextvars(topic="sensor.windows", partition=3)
    structlog.get_logger("tandem.test").info("batch_scored", records=4096)
    (event,) = lines(stream)
    assert event["event"] == "batch_scored"
    assert event["records"] == 4096
    assert event["topic"] == "sensor.windows"
    assert event["partition"] == 3
    assert event["level"] == "info"
    stamp = str(event["timestamp"])
    assert stamp.endswith("Z")
    assert datetime.fromisoformat(stamp).utcoffset().total_seconds() == 0  # type: ignore[union-attr]


def test_a_mapping_with_number_keys_renders_as_json() -> None:
    stream = io.StringIO()
    configure_logging(level="info", fmt="json", stream=stream)
    structlog.get_logger("tandem.test").info("replay_done", per_partition={0: 600, 1: 600})
    (event,) = lines(stream)
    assert event["per_partition"] == {"0": 600, "1": 600}


def test_level_filters_events() -> None:
    stream = io.StringIO()
    configure_logging(level="warning", fmt="json", stream=stream)
    log = structlog.get_logger("tandem.test")
    log.info("quiet")
    log.warning("loud")
    assert [event["event"] for event in lines(stream)] == ["loud"]


def test_standard_library_loggers_share_the_json_stream() -> None:
    stream = io.StringIO()
    configure_logging(level="info", fmt="json", stream=stream)
    logging.getLogger("kafka.conn").info("chatter held back at WARNING")
    logging.getLogger("kafka.conn").warning("broker %s gone", 1)
    logging.getLogger("other").info("plain stdlib")
    events = lines(stream)
    assert [event["event"] for event in events] == ["broker 1 gone", "plain stdlib"]
    assert events[0]["logger"] == "kafka.conn"
    assert events[0]["level"] == "warning"


def test_exceptions_render_as_structured_tracebacks() -> None:
    stream = io.StringIO()
    configure_logging(level="info", fmt="json", stream=stream)
    try:
        raise ValueError("boom")
    except ValueError:
        structlog.get_logger("tandem.test").exception("failed")
    (event,) = lines(stream)
    assert event["exception"][0]["exc_type"] == "ValueError"  # type: ignore[index]


def test_console_format_is_not_json() -> None:
    stream = io.StringIO()
    configure_logging(level="info", fmt="console", stream=stream)
    structlog.get_logger("tandem.test").info("hello", answer=42)
    text = stream.getvalue()
    assert "hello" in text and "answer=42" in text
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(text)


def test_secrets_are_redacted_from_what_kafka_python_logs_at_debug() -> None:
    """kafka-python's admin client logs its whole configuration at debug level, passwords
    included; the real client, pointed at a port nobody listens on, logs it before it fails."""
    from kafka import KafkaAdminClient
    from kafka.errors import KafkaError

    from streamer.config import KafkaConfig

    kafka = KafkaConfig.model_validate(
        {
            "bootstrap": "127.0.0.1:9",
            "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "PLAIN",
            "sasl_plain_username": "tandem",
            "sasl_plain_password": "pa55-w0rd-in-clear",
        }
    )
    stream = io.StringIO()
    configure_logging(level="debug", fmt="json", stream=stream, secrets=kafka.secrets())
    options = {**kafka.client_options(), "request_timeout_ms": 1000, "bootstrap_timeout_ms": 500}
    with pytest.raises(KafkaError):
        KafkaAdminClient(**{k: v for k, v in options.items() if v is not None})
    written = stream.getvalue()
    assert "Starting KafkaAdminClient with configuration" in written
    assert "pa55-w0rd-in-clear" not in written and "'sasl_plain_password': '***'" in written
