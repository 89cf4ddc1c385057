"""``[kafka.client_config]``: client properties passed through, checked against the client's
own names, refused where tandem sets them itself, and masked wherever they are shown."""

from __future__ import annotations

import io
import logging
import tomllib
from pathlib import Path

import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

from streamer.cli.main import ExitCode, main
from streamer.client_config import kafka_python_options
from streamer.config import load_config, masked
from streamer.errors import ConfigError
from streamer.logging import configure_logging


def config_file(tmp_path: Path, client: str, table: str) -> Path:
    path = tmp_path / "deploy.toml"
    path.write_text(f'[kafka]\nclient = "{client}"\n[kafka.client_config]\n{table}')
    return path


def test_librdkafka_properties_reach_the_client_and_secrets_stay_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from streamer.broker.librdkafka import rdkafka_options

    table = (
        '"sasl.oauthbearer.method" = "oidc"\n'
        '"sasl.oauthbearer.client.id" = "tandem"\n'
        '"sasl.oauthbearer.client.secret" = "oidc-s3cret"\n'
        '"sasl.oauthbearer.token.endpoint.url" = "https://idp.example/token"\n'
        '"fetch.wait.max.ms" = 50\n'
    )
    path = config_file(tmp_path, "librdkafka", table)
    config = load_config(path)
    options = rdkafka_options(config.kafka)
    assert options["sasl.oauthbearer.method"] == "oidc"
    assert options["sasl.oauthbearer.client.secret"] == "oidc-s3cret"
    assert options["fetch.wait.max.ms"] == 50
    assert "sasl.oauthbearer.method" not in config.kafka.client_options()  # not kafka-python's
    assert "oidc-s3cret" in config.kafka.secrets()  # redacted from every log line

    shown = masked(config)["kafka"]["client_config"]
    assert shown["sasl.oauthbearer.client.secret"] == "**********"
    assert shown["sasl.oauthbearer.client.id"] == "tandem"
    assert main(["config", "show", "--config", str(path)]) == ExitCode.OK
    out = capsys.readouterr().out
    assert "oidc-s3cret" not in out
    assert tomllib.loads(out)["kafka"]["client_config"]["fetch.wait.max.ms"] == 50


def test_kafka_python_keywords_reach_only_the_clients_that_take_them(tmp_path: Path) -> None:
    table = "max_poll_records = 7\nlinger_ms = 20\nsasl_kerberos_service_name = 'kafka'\n"
    options = load_config(config_file(tmp_path, "kafka-python", table)).kafka.client_options()
    consumer = kafka_python_options(KafkaConsumer, options, max_poll_records=4096)
    producer = kafka_python_options(KafkaProducer, options, linger_ms=5)
    admin = kafka_python_options(KafkaAdminClient, options)
    assert consumer["max_poll_records"] == 7  # the table wins over the call site's own
    assert "linger_ms" not in consumer
    assert producer["linger_ms"] == 20 and "max_poll_records" not in producer
    assert "max_poll_records" not in admin and "linger_ms" not in admin
    assert {c["sasl_kerberos_service_name"] for c in (consumer, producer, admin)} == {"kafka"}


@pytest.mark.parametrize(
    ("client", "table", "message"),
    [
        ("kafka-python", "max_pol_records = 7\n", "did you mean 'max_poll_records'"),
        ("kafka-python", "enable_auto_commit = true\n", "commits only after a batch's output"),
        ("kafka-python", "bootstrap_servers = 'x:1'\n", "[kafka].bootstrap"),
        ("librdkafka", '"fetch.wiat.max.ms" = 5\n', "'fetch.wiat.max.ms' is not a librdkafka"),
        ("librdkafka", '"enable.idempotence" = false\n', "producer is idempotent"),
        ("librdkafka", '"sasl.password" = "x"\n', "[kafka].sasl_plain_password"),
        ("librdkafka", '"socket.timeout.ms" = [1, 2]\n', "must be a string, number or boolean"),
    ],
)
def test_unknown_or_owned_properties_are_refused_naming_them(
    tmp_path: Path, client: str, table: str, message: str
) -> None:
    with pytest.raises(ConfigError, match="client_config") as raised:
        load_config(config_file(tmp_path, client, table))
    assert message in str(raised.value)


def test_a_secret_in_the_table_is_redacted_from_what_kafka_python_logs() -> None:
    config = load_config(None, environ={})
    kafka = config.kafka.model_copy(update={"client_config": {"sasl_oauth_token": "t0ken"}})
    stream = io.StringIO()
    configure_logging(level="debug", fmt="json", stream=stream, secrets=kafka.secrets())
    logging.getLogger("kafka.conn").debug("configuration: %s", {"sasl_oauth_token": "t0ken"})
    assert "sasl_oauth_token" in stream.getvalue()
    assert "t0ken" not in stream.getvalue()


def test_librdkafka_builds_a_client_from_the_readme_oidc_example(tmp_path: Path) -> None:
    """As far as this machine allows (no identity provider): librdkafka accepts the README's
    OAUTHBEARER/OIDC settings together and builds a client from them."""
    from confluent_kafka import Producer

    from streamer.broker.librdkafka import rdkafka_options

    table = (
        '"sasl.oauthbearer.method" = "oidc"\n'
        '"sasl.oauthbearer.client.id" = "tandem"\n'
        '"sasl.oauthbearer.client.secret" = "..."\n'
        '"sasl.oauthbearer.token.endpoint.url" = "https://idp.example.com/oauth2/token"\n'
        '"sasl.oauthbearer.scope" = "kafka"\n'
    )
    path = tmp_path / "oidc.toml"
    path.write_text(
        '[kafka]\nclient = "librdkafka"\nsecurity_protocol = "SASL_SSL"\n'
        f'sasl_mechanism = "OAUTHBEARER"\n[kafka.client_config]\n{table}'
    )
    options = rdkafka_options(load_config(path).kafka)
    quiet = {k: v for k, v in options.items() if k not in ("logger", "error_cb")}
    Producer({**quiet, "log_level": 0}).flush(0)
