"""A cluster that asks for a password: a private broker with a SASL_PLAINTEXT listener (mechanism
PLAIN, ``scripts/kafka.sh``'s ``TANDEM_BROKER_SASL_PORT``). The right password is served; a wrong
one is never written to the log, in any form, even at debug level, where kafka-python logs the
SASL exchange itself."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest

from streamer.broker.admin import TopicSpec, create_topics, probe_broker
from streamer.cli.main import ExitCode
from streamer.config import KafkaConfig
from streamer.logging import written_forms
from tests.conftest import _script

PORT, SASL_PORT = 19692, 19694
USER, PASSWORD = "tandem", "tandem-secret"
WRONG = "pa\"ss'w\u00f6rd\\x"
"""A wrong password with a quote, an apostrophe, a non-ASCII letter and a backslash: each is
escaped where kafka-python logs the SASL exchange (``auth_bytes=b'...'``)."""


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The SASL listener's bootstrap address of a private broker, stopped after the module."""
    env = {
        "TANDEM_BROKER_PORT": str(PORT),
        "TANDEM_BROKER_SASL_PORT": str(SASL_PORT),
        "TANDEM_BROKER_SASL_USERS": f"{USER}:{PASSWORD}",
        "TANDEM_BROKER_HOME": str(tmp_path_factory.mktemp("sasl-kafka")),
    }
    unset = ("TANDEM_KAFKA_BOOTSTRAP",)
    started = _script("start", env=env, unset=unset)
    assert started.returncode == 0, started.stderr
    try:
        yield f"127.0.0.1:{SASL_PORT}"
    finally:
        _script("stop", env=env, unset=unset)


def sasl(bootstrap: str, password: str) -> KafkaConfig:
    return KafkaConfig(
        bootstrap=bootstrap,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="PLAIN",
        sasl_plain_username=USER,
        sasl_plain_password=password,
    )


def test_the_right_password_is_served(sasl_broker: str) -> None:
    options = sasl(sasl_broker, PASSWORD).client_options()
    assert probe_broker(options, timeout_s=30.0).brokers == [sasl_broker]
    assert create_topics(options, [TopicSpec("over-sasl", 1)]) == ["over-sasl"]


@pytest.mark.parametrize("client", ["kafka-python", "librdkafka"])
def test_a_wrong_password_is_an_authentication_failure_exit_4_never_logged(
    sasl_broker: str, tiny_bundle: Path, tmp_path: Path, client: str
) -> None:
    """``tandem run`` at debug level with a wrong password: the broker's refusal is told from
    an absent broker (kafka-python raises only a bootstrap timeout for it; the refusal it logs
    meanwhile is caught), so the daemon says the credentials were refused, naming the user,
    and exits 4 at once, well inside its 60 s wait for the broker. Neither the password nor
    any escaped form of it is in its output; on kafka-python, which logs the SASL exchange
    itself, ``***`` stands where the password was."""
    ran = run_with_wrong_password(sasl_broker, tiny_bundle, tmp_path, client, 60)
    assert ran.returncode == ExitCode.AUTHENTICATION, ran.stderr[-3000:]
    assert "tandem: the broker refused the credentials of [kafka]" in ran.stderr
    assert f"sasl_plain_username '{USER}'" in ran.stderr
    assert not any(form in ran.stdout + ran.stderr for form in written_forms(WRONG))
    if client == "kafka-python":
        lines = (line for line in ran.stderr.splitlines() if line.startswith("{"))
        written = "\n".join(str(orjson.loads(line)["event"]) for line in lines)  # JSON unescaped
        assert "SaslAuthenticateRequest" in written, "kafka-python logged the exchange"
        leaked = sorted(form for form in written_forms(WRONG) if form in written)
        assert not leaked, leaked
        assert "auth_bytes=b'tandem\\x00tandem\\x00***'" in written


def test_librdkafka_is_served_with_the_right_password(sasl_broker: str) -> None:
    from streamer.broker.rdkafka_admin import probe_broker

    assert probe_broker(sasl(sasl_broker, PASSWORD), timeout_s=30.0).brokers


def run_with_wrong_password(
    sasl_broker: str, tiny_bundle: Path, tmp_path: Path, client: str, wait_s: int
) -> subprocess.CompletedProcess[str]:
    """``tandem run`` on ``client`` at debug level with the WRONG password (from the
    environment), waiting ``wait_s`` for the broker; its output."""
    config = tmp_path / "sasl.toml"
    config.write_text(
        f'[kafka]\nbootstrap = "{sasl_broker}"\nsecurity_protocol = "SASL_PLAINTEXT"\n'
        f'sasl_mechanism = "PLAIN"\nsasl_plain_username = "{USER}"\nclient = "{client}"\n'
        f'[model]\nbundle = "{tiny_bundle}"\ndevice = "cpu"\n[metrics]\nenabled = false\n'
    )
    environment = {"TANDEM_KAFKA_SASL_PLAIN_PASSWORD": WRONG, "PATH": "/usr/bin:/bin"}
    command = [sys.executable, "-m", "streamer", "--log-level", "debug", "--log-format", "json"]
    command += ["run", "--config", str(config), "--broker-wait-s", str(wait_s)]
    return subprocess.run(
        command, capture_output=True, text=True, env=environment, timeout=120, check=False
    )
