"""Config loading: shipped files, defaults, env overrides, and the errors people will see."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
import tomli_w
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from streamer.config import (
    BatchConfig,
    CalibrationConfig,
    KafkaConfig,
    TandemConfig,
    load_config,
    masked,
)
from streamer.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "deploy.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("name", ["default.toml", "market.toml", "sensor.toml"])
def test_shipped_configs_load(name: str) -> None:
    assert isinstance(load_config(CONFIGS / name, environ={}), TandemConfig)


def test_default_toml_writes_out_exactly_the_code_defaults() -> None:
    assert load_config(CONFIGS / "default.toml", environ={}) == TandemConfig()


def test_no_file_means_defaults() -> None:
    assert load_config(None, environ={}) == TandemConfig()


def test_unknown_key_names_file_section_key_and_suggests(tmp_path: Path) -> None:
    path = write(tmp_path, '[kafka]\nbootstrapp = "h:1"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert str(path) in message
    assert "[kafka] unknown key 'bootstrapp'" in message
    assert "did you mean 'bootstrap'" in message


def test_unknown_section_is_named(tmp_path: Path) -> None:
    path = write(tmp_path, "[kafak]\ngroup_id = 'x'\n")
    with pytest.raises(ConfigError, match=r"unknown section \[kafak\] \(did you mean 'kafka'"):
        load_config(path, environ={})


def test_wrong_type_names_key_and_expected_type(tmp_path: Path) -> None:
    path = write(tmp_path, '[batch]\nmax_records = "many"\n[model]\ndevice = "tpu"\n')
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    message = str(caught.value)
    assert f"{path}: [batch] max_records = 'many': expected integer" in message
    assert "[model] device = 'tpu': expected one of 'auto', 'cpu', 'gpu'" in message


def test_out_of_range_value_says_the_bound(tmp_path: Path) -> None:
    path = write(tmp_path, "[batch]\nmax_records = 0\n")
    with pytest.raises(
        ConfigError, match=r"max_records = 0: expected integer .*greater than or equal to 1"
    ):
        load_config(path, environ={})


def test_cross_field_rule_is_reported_against_its_section(tmp_path: Path) -> None:
    path = write(tmp_path, "[calibration]\nwindow = 100\nwarmup = 500\n")
    with pytest.raises(
        ConfigError, match=r"\[calibration\]: warmup \(500\) must not exceed window"
    ):
        load_config(path, environ={})


def test_adapting_faster_than_a_refresh_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "[calibration]\nrefresh = 256\nadapt_after = 100\n")
    with pytest.raises(ConfigError, match=r"adapt_after \(100\) must be 0 .* refresh"):
        load_config(path, environ={})
    assert load_config(write(tmp_path, "[calibration]\nadapt_after = 0\n"), environ={})


def test_alert_events_are_the_default_and_windows_can_be_chosen(tmp_path: Path) -> None:
    assert load_config(None, environ={}).alerts.mode == "events"
    chosen = load_config(write(tmp_path, '[alerts]\nmode = "windows"\nquiet = 4\n'), environ={})
    assert (chosen.alerts.mode, chosen.alerts.quiet) == ("windows", 4)
    with pytest.raises(ConfigError, match="quiet"):
        load_config(write(tmp_path, "[alerts]\nquiet = 0\n"), environ={})


def test_invalid_toml_and_missing_file_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(write(tmp_path, "[kafka\n"), environ={})
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml", environ={})


def test_environment_overrides_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[kafka]\nbootstrap = "file:9092"\n[batch]\nmax_wait_ms = 10\n')
    config = load_config(
        path,
        environ={
            "TANDEM_KAFKA_BOOTSTRAP": "env:9092",
            "TANDEM_BATCH_MAX_WAIT_MS": "75",
            "TANDEM_CALIBRATION_PER_KEY": "true",
            "TANDEM_CODEC_FEATURE_NAMES": "open, high,low",
        },
    )
    assert config.kafka.bootstrap == "env:9092"
    assert config.batch.max_wait_ms == 75
    assert config.calibration.per_key is True
    assert config.codec.feature_names == ("open", "high", "low")


def test_bad_environment_value_names_the_variable() -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(None, environ={"TANDEM_BATCH_MAX_RECORDS": "lots"})
    assert "environment variable TANDEM_BATCH_MAX_RECORDS: [batch] max_records" in str(caught.value)


def test_environment_key_typo_in_a_known_section_is_an_error() -> None:
    with pytest.raises(ConfigError, match="environment variable TANDEM_KAFKA_BOOTSTRAPS"):
        load_config(None, environ={"TANDEM_KAFKA_BOOTSTRAPS": "h:1"})


def test_script_variables_outside_the_sections_are_ignored() -> None:
    environ = {"TANDEM_PYTHON": "/usr/bin/python3", "TANDEM_BROKER_PORT": "19092", "TANDEM_": "x"}
    assert load_config(None, environ=environ) == TandemConfig()


def test_config_is_frozen() -> None:
    config = TandemConfig()
    with pytest.raises(ValidationError):
        config.batch.max_records = 1  # type: ignore[misc]


@pytest.mark.parametrize("bootstrap", ["localhost", "h:1,", "h:1 h:2", ""])
def test_malformed_bootstrap_is_rejected(bootstrap: str) -> None:
    with pytest.raises(ConfigError, match="host:port pairs"):
        load_config(None, environ={"TANDEM_KAFKA_BOOTSTRAP": bootstrap})


def test_topic_names_are_checked() -> None:
    with pytest.raises(ConfigError, match="input_topic = 'bad topic'"):
        load_config(None, environ={"TANDEM_KAFKA_INPUT_TOPIC": "bad topic"})


def test_duplicate_feature_names_are_rejected() -> None:
    with pytest.raises(ConfigError, match="repeated: a"):
        load_config(None, environ={"TANDEM_CODEC_FEATURE_NAMES": "a,b,a"})


def test_sasl_needs_mechanism_and_credentials() -> None:
    with pytest.raises(ValidationError, match="needs sasl_mechanism"):
        KafkaConfig(security_protocol="SASL_SSL")
    with pytest.raises(ValidationError, match="needs sasl_plain_username"):
        KafkaConfig(security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512")


def test_security_settings_pass_through_and_secrets_stay_masked() -> None:
    config = load_config(
        None,
        environ={
            "TANDEM_KAFKA_BOOTSTRAP": "b1:9093, b2:9093",
            "TANDEM_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "TANDEM_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "TANDEM_KAFKA_SASL_PLAIN_USERNAME": "svc",
            "TANDEM_KAFKA_SASL_PLAIN_PASSWORD": "hunter2",
            "TANDEM_KAFKA_SSL_CAFILE": "/etc/ca.pem",
        },
    )
    options = config.kafka.client_options()
    assert options["bootstrap_servers"] == ["b1:9093", "b2:9093"]
    assert options["sasl_plain_password"] == "hunter2"
    assert options["ssl_cafile"] == "/etc/ca.pem"
    assert options["ssl_check_hostname"] is True
    assert "hunter2" not in repr(config)
    shown = masked(config)
    assert shown["kafka"]["sasl_plain_password"] == "**********"
    assert "hunter2" not in tomli_w.dumps(shown)


def test_plaintext_client_options_carry_no_security_settings() -> None:
    options = KafkaConfig().client_options()
    assert set(options) == {
        "bootstrap_servers",
        "client_id",
        "request_timeout_ms",
        "security_protocol",
        "reconnect_backoff_max_ms",
    }


@given(
    max_records=st.integers(1, 1_000_000),
    max_wait_ms=st.integers(0, 60_000),
    target_rate=st.floats(1e-9, 0.5),
    window=st.integers(1000, 10**7),
    per_key=st.booleans(),
)
def test_shown_config_loads_back_to_the_same_config(
    max_records: int, max_wait_ms: int, target_rate: float, window: int, per_key: bool
) -> None:
    config = TandemConfig(
        batch=BatchConfig(max_records=max_records, max_wait_ms=max_wait_ms),
        calibration=CalibrationConfig(target_rate=target_rate, window=window, per_key=per_key),
    )
    reloaded = TandemConfig.model_validate(tomllib.loads(tomli_w.dumps(masked(config))))
    assert reloaded == config
