"""Deployment configuration: frozen, validated models read from TOML and overridden by environment.

Only the CLI loads configuration (``load_config``); every other part receives these objects, never
dicts or environment variables. A file may give any subset of sections and keys; the rest take the
defaults below. ``TANDEM_<SECTION>_<KEY>`` variables override the file, so a container can
change ``[kafka].bootstrap`` with ``TANDEM_KAFKA_BOOTSTRAP`` without a new file. Variables whose
second word is not a section (``TANDEM_PYTHON``, ``TANDEM_BROKER_PORT``) belong to the scripts
and are ignored.

Every problem (unknown key, wrong type, value out of range) is reported in one ``ConfigError`` that
names where the value came from (file or variable), the key, and the type that was expected.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from detectors.spec import CascadeSpec, FusionSpec
from streamer.client_config import check_client_config, masked_client_config, secret_values
from streamer.errors import ConfigError

ENV_PREFIX = "TANDEM_"

_TOPIC_CHARS = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_HOST_PORT = re.compile(r"^[^\s,:]+:\d{1,5}$")


def _check_topic(name: str) -> str:
    if not _TOPIC_CHARS.match(name):
        raise ValueError("a topic name is 1 to 249 of the characters A-Z a-z 0-9 . _ -")
    return name


def _check_bootstrap(servers: str) -> str:
    bad = [part.strip() for part in servers.split(",") if not _HOST_PORT.match(part.strip())]
    if bad:
        raise ValueError(
            f"bootstrap servers are host:port pairs separated by commas; not {bad[0]!r}"
        )
    return servers


TopicName = Annotated[str, AfterValidator(_check_topic)]
"""A legal Kafka topic name."""

Bootstrap = Annotated[str, AfterValidator(_check_bootstrap)]
"""Comma-separated ``host:port`` pairs."""


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaConfig(_Section):
    """Where the cluster is, which topics the daemon reads and writes, and how it authenticates.

    The security keys are kafka-python's own settings, passed through unchanged by
    ``client_options`` (and translated for librdkafka: ``streamer.broker.librdkafka``); the two
    secrets are ``SecretStr`` so they never print. ``client``: the library the daemon's source
    and producer use (kafka-python, the default, or librdkafka through confluent-kafka).
    ``session_timeout_ms``: how long the group waits for a member that stopped answering (killed)
    before handing its partitions to others; both clients' default, 45 s. Shorter hands them over
    sooner after a crash; too short for a loaded machine makes members fall out of the group.
    """

    bootstrap: Bootstrap = "127.0.0.1:19092"
    input_topic: TopicName = "tandem.windows"
    alerts_topic: TopicName = "tandem.alerts"
    dead_letter_topic: TopicName = "tandem.dead-letter"
    group_id: Annotated[str, StringConstraints(min_length=1, max_length=200)] = "tandem"
    client_id: Annotated[str, StringConstraints(min_length=1)] = "tandem"
    auto_offset_reset: Literal["earliest", "latest"] = "earliest"
    transactional: bool = False
    client: Literal["kafka-python", "librdkafka"] = "kafka-python"
    session_timeout_ms: Annotated[int, Field(ge=6_000, le=300_000)] = 45_000
    request_timeout_ms: Annotated[int, Field(ge=1000)] = 30_000
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: (
        Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER", "GSSAPI"] | None
    ) = None
    sasl_plain_username: str | None = None
    sasl_plain_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_password: SecretStr | None = None
    ssl_check_hostname: bool = True
    client_config: dict[str, Any] = Field(default_factory=dict)
    """``[kafka.client_config]``: more client properties, in the client's own names
    (``streamer.client_config``)."""

    @model_validator(mode="after")
    def _known_client_config(self) -> Self:
        check_client_config(self.client, self.client_config)
        return self

    @model_validator(mode="after")
    def _sasl_needs_credentials(self) -> Self:
        if self.security_protocol.startswith("SASL"):
            if self.sasl_mechanism is None:
                raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
            if self.sasl_mechanism in ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512") and (
                self.sasl_plain_username is None or self.sasl_plain_password is None
            ):
                raise ValueError(
                    f"sasl_mechanism {self.sasl_mechanism} needs sasl_plain_username "
                    "and sasl_plain_password"
                )
        return self

    @property
    def state_topic(self) -> str:
        """The compacted topic holding calibrator checkpoints for this consumer group."""
        return f"{self.group_id}.state"

    @property
    def bootstrap_servers(self) -> list[str]:
        return [server.strip() for server in self.bootstrap.split(",")]

    def secrets(self) -> tuple[str, ...]:
        """The secret values set (passwords), for ``configure_logging`` to redact wherever a
        library logs them."""
        values = (_reveal(self.sasl_plain_password), _reveal(self.ssl_password))
        return tuple(value for value in values if value) + secret_values(self.client_config)

    def client_options(self) -> dict[str, Any]:
        """Keyword arguments shared by every kafka-python client: servers, identity, security.

        Secrets are revealed here and nowhere else; unset settings are left out so the client's
        own defaults apply.
        """
        options: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers,
            "client_id": self.client_id,
            "request_timeout_ms": self.request_timeout_ms,
            "security_protocol": self.security_protocol,
            # kafka-python backs off reconnecting up to 30 s by default, so a daemon would sit
            # idle that long after its broker came back; 2 s keeps recovery prompt.
            "reconnect_backoff_max_ms": 2000,
        }
        optional: dict[str, Any] = {
            "sasl_mechanism": self.sasl_mechanism,
            "sasl_plain_username": self.sasl_plain_username,
            "sasl_plain_password": _reveal(self.sasl_plain_password),
            "ssl_cafile": _path_str(self.ssl_cafile),
            "ssl_certfile": _path_str(self.ssl_certfile),
            "ssl_keyfile": _path_str(self.ssl_keyfile),
            "ssl_password": _reveal(self.ssl_password),
        }
        options.update({key: value for key, value in optional.items() if value is not None})
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_check_hostname"] = self.ssl_check_hostname
        if self.client == "kafka-python":
            options.update(self.client_config)
        return options


class BatchConfig(_Section):
    """A batch closes at ``max_records`` windows, or ``max_wait_ms`` after the daemon began to
    collect it (so no window waits longer than that for its batch to start).

    ``prefetch``: how many batches the Kafka consumer may poll ahead of the scoring, in a
    process of its own (``streamer.broker.prefetch``); 0 polls in the daemon's process, between
    batches.
    """

    max_records: Annotated[int, Field(ge=1, le=1_000_000)] = 4096
    max_wait_ms: Annotated[int, Field(ge=0, le=60_000)] = 250
    prefetch: Annotated[int, Field(ge=0, le=16)] = 2


class ModelConfig(_Section):
    """The model bundle the daemon scores with, and where it runs. ``watch_s``: how often (in
    seconds) the daemon looks at ``bundle`` (or ``--model``) for a new version to swap in between
    batches (0: never); point it at a symbolic link (``models/pump/current``) and move the link
    to roll a new model out (``streamer.broker.models``)."""

    bundle: Path | None = None
    device: Literal["auto", "cpu", "gpu"] = "auto"
    watch_s: Annotated[float, Field(ge=0.0, le=86_400.0)] = 10.0


class CalibrationConfig(_Section):
    """How scores become flags: the threshold method and the false-alarm rate it aims for.

    ``target_rate`` is the wanted fraction of normal windows flagged (SPOT/DSPOT); ``quantile``
    is the rolling-quantile method's level. ``window`` and ``warmup`` count windows; ``refresh`` is
    how many windows an entity sees between threshold recomputations (``likelihood``: between
    exact refits; its fit follows every window in between). ``checkpoint_interval_s``
    is how often the state is saved to the state topic (0: after every batch). ``adapt_after``:
    an entity more than half of whose last ``adapt_after`` windows were flagged takes them as its
    new normal (0: never; else at least ``refresh``; why 2048: docs/calibration.md).
    ``from_held_out``: while the global state warms up, windows are judged by a threshold
    fitted on the model's held-out scores (false, or a bundle without them: nothing is flagged
    during the first ``warmup`` windows). ``max_keys``: the most entities kept per key (0: no
    cap); the least recently seen are dropped beyond it (bytes per key: docs/calibration.md).
    ``smooth``: for ``likelihood``, the scores in the moving average it judges
    (``calibration.likelihood``; ``target_rate`` is then the tail probability flagged).
    """

    method: Literal["quantile", "spot", "dspot", "likelihood"] = "spot"
    target_rate: Annotated[float, Field(gt=0.0, lt=1.0)] = 1e-4
    quantile: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.999
    window: Annotated[int, Field(ge=10)] = 10_000
    warmup: Annotated[int, Field(ge=10)] = 1_000
    refresh: Annotated[int, Field(ge=1)] = 256
    init_level: Annotated[float, Field(gt=0.5, lt=1.0)] = 0.98
    depth: Annotated[int, Field(ge=1)] = 50
    per_key: bool = True
    checkpoint_interval_s: Annotated[float, Field(ge=0.0, le=3600.0)] = 10.0
    adapt_after: Annotated[int, Field(ge=0, le=10_000_000)] = 2048
    from_held_out: bool = True
    max_keys: Annotated[int, Field(ge=0, le=100_000_000)] = 10_000
    smooth: Annotated[int, Field(ge=1, le=10_000)] = 10

    @model_validator(mode="after")
    def _warmup_fits_window(self) -> Self:
        if self.warmup > self.window:
            raise ValueError(f"warmup ({self.warmup}) must not exceed window ({self.window})")
        if self.refresh > self.window:
            raise ValueError(f"refresh ({self.refresh}) must not exceed window ({self.window})")
        if 0 < self.adapt_after < self.refresh:
            raise ValueError(
                f"adapt_after ({self.adapt_after}) must be 0 (never adapt) or at least refresh "
                f"({self.refresh}): adapting is decided at refresh boundaries"
            )
        return self


class MemoryConfig(_Section):
    """A per-key memory of normal windows behind the detector (``calibration.memory``): a
    window like one its key has shown scores no higher than its novelty, so a new daily pattern
    or operating point stops alarming once it has been seen for a while.

    ``enabled``: true judges with the memory, false (the default) with the model alone (when
    to turn it on: the README's "A memory of normal windows"). ``capacity`` windows are
    remembered per key, one learned window in every ``stride``; a window is learned when its
    score stays under ``gate`` tail decades. ``block``: a key's windows are judged against the
    memory as it stood at their block's start (the same result under any batching).
    ``exclude``: remembered windows this close in a key's order overlap a window and are not
    its neighbours (0: the window's length in steps when the model's feature names tell it, as
    for a model cut from a series, else 16). ``max_keys``: keys remembered, each 4 ``capacity``
    D bytes (docs/evaluation.md, a memory of normal windows).
    """

    enabled: bool = False
    capacity: Annotated[int, Field(ge=16, le=1_000_000)] = 2500
    stride: Annotated[int, Field(ge=1, le=10_000)] = 4
    block: Annotated[int, Field(ge=1, le=1_000_000)] = 256
    reference: Annotated[int, Field(ge=16, le=1_000_000)] = 2000
    exclude: Annotated[int, Field(ge=0, le=1_000_000)] = 0
    gate: Annotated[float, Field(gt=0.0, le=1_000.0)] = 3.0
    max_keys: Annotated[int, Field(ge=1, le=100_000_000)] = 1000


class AlertsConfig(_Section):
    """What goes to the alerts topic: one record per flagged window (``windows``), or alert
    events (``events``): per key, an event opens at its first flagged window, is updated while
    it lasts and closes after ``quiet`` windows of the key in a row are not flagged.

    ``update_every``: an open event publishes an update at most every this many windows of its
    key, and only when windows were flagged since its last record. ``cooldown``: windows of a
    key after an event closes during which flags open no new event. All three count windows of
    the event's key, so the records do not depend on batching (docs/alerts.md).
    """

    mode: Literal["events", "windows"] = "events"
    quiet: Annotated[int, Field(ge=1, le=1_000_000)] = 32
    update_every: Annotated[int, Field(ge=1, le=1_000_000)] = 256
    cooldown: Annotated[int, Field(ge=0, le=1_000_000)] = 0


class CodecConfig(_Section):
    """How input records are decoded, and the limits past which a record is dead-lettered.

    ``feature_names``: the order of a positional ``features`` array (or f32 value) when the feed's
    order is not the model's: the model's feature names, or for a model cut from a series its
    channel names (each step then lists the channels in this order); empty: the model's order.
    ``missing``: a missing value (JSON ``null``, NaN) makes the record a dead letter, or is
    filled from the same channel's previous step in the window (``streamer.ingest.features``).
    ``input``: each record is a window, or one reading per step that the daemon cuts into
    windows per key, a window every ``stride`` readings, restarting a key's series after a gap
    of more than ``max_gap_ms`` (0: never) (``streamer.ingest.readings``)."""

    format: Literal["json", "f32"] = "json"
    input: Literal["windows", "readings"] = "windows"
    stride: Annotated[int, Field(ge=1)] = 1
    max_gap_ms: Annotated[int, Field(ge=0)] = 0
    feature_names: tuple[str, ...] = ()
    missing: Literal["dead-letter", "fill-previous"] = "dead-letter"
    max_abs_value: Annotated[float, Field(gt=0.0)] = 1e12
    max_record_bytes: Annotated[int, Field(ge=16)] = 1_048_576
    max_key_chars: Annotated[int, Field(ge=1, le=1_000_000)] = 256

    @field_validator("feature_names", mode="before")
    @classmethod
    def _split_comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(name.strip() for name in value.split(",") if name.strip())
        return value

    @field_validator("feature_names")
    @classmethod
    def _names_unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        duplicated = sorted({name for name in value if value.count(name) > 1})
        if duplicated:
            raise ValueError(f"feature names must be unique; repeated: {', '.join(duplicated)}")
        return value


class MetricsConfig(_Section):
    """The Prometheus metrics (``/metrics``) and health endpoints (``/health/live``,
    ``/health/ready``). Port 0 takes any free port (logged at start). ``stall_s``: seconds
    without a run-loop iteration after which ``/health/live`` says the daemon is stuck (waiting
    for the broker's acknowledgements counts as iterating: ``streamer.broker.sinks``)."""

    enabled: bool = True
    host: str = "0.0.0.0"
    port: Annotated[int, Field(ge=0, le=65535)] = 9108
    stall_s: Annotated[float, Field(ge=1.0, le=86_400.0)] = 60.0


class LogConfig(_Section):
    """Log level and rendering; ``auto`` renders JSON lines unless stderr is a terminal."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class TandemConfig(_Section):
    """One deployment's whole configuration; every section is optional in the file."""

    kafka: KafkaConfig = KafkaConfig()
    batch: BatchConfig = BatchConfig()
    model: ModelConfig = ModelConfig()
    calibration: CalibrationConfig = CalibrationConfig()
    alerts: AlertsConfig = AlertsConfig()
    memory: MemoryConfig = MemoryConfig()
    codec: CodecConfig = CodecConfig()
    metrics: MetricsConfig = MetricsConfig()
    log: LogConfig = LogConfig()
    train: CascadeSpec = CascadeSpec()
    fusion: FusionSpec = FusionSpec()


SECTIONS: dict[str, type[BaseModel]] = {
    name: typing.cast(type[BaseModel], field.annotation)
    for name, field in TandemConfig.model_fields.items()
}


def load_config(path: Path | None, environ: Mapping[str, str] | None = None) -> TandemConfig:
    """Read ``path`` (or only defaults when None), apply ``TANDEM_*`` overrides, validate.

    Raises ``ConfigError`` listing every problem, each with its origin, key and expected type.
    """
    environ = os.environ if environ is None else environ
    data: dict[str, Any] = _read_toml(path) if path is not None else {}
    origins: dict[tuple[str, ...], str] = {}
    file_label = str(path) if path is not None else "defaults"
    for name, value in sorted(environ.items()):
        located = _env_location(name)
        if located is None:
            continue
        section, key = located
        table = data.setdefault(section, {})
        if not isinstance(table, dict):
            raise ConfigError(f"{file_label}: [{section}] must be a table to accept {name}")
        table[key] = value
        origins[(section, key)] = f"environment variable {name}"
    try:
        return TandemConfig.model_validate(data)
    except ValidationError as error:
        problems = [_describe(item, origins, file_label) for item in error.errors()]
        raise ConfigError(
            "invalid configuration:\n" + "\n".join(f"  {p}" for p in problems)
        ) from None


def overrides_in(environ: Mapping[str, str]) -> list[str]:
    """Names of the environment variables that ``load_config`` applies, for ``config show``."""
    return sorted(name for name in environ if _env_location(name) is not None)


def masked(config: TandemConfig) -> dict[str, Any]:
    """The config as plain data with secrets replaced by asterisks and unset keys left out."""
    dumped = config.model_dump(mode="json")
    dumped["kafka"]["client_config"] = masked_client_config(config.kafka.client_config)
    return {
        section: {key: value for key, value in table.items() if value is not None}
        for section, table in dumped.items()
    }


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML: {error}") from None


def _env_location(name: str) -> tuple[str, str] | None:
    """``TANDEM_KAFKA_GROUP_ID`` → ``("kafka", "group_id")``; None unless a section follows."""
    if not name.startswith(ENV_PREFIX):
        return None
    section, _, key = name[len(ENV_PREFIX) :].lower().partition("_")
    if section not in SECTIONS or not key:
        return None
    return section, key


def _describe(item: Any, origins: Mapping[tuple[str, ...], str], file_label: str) -> str:
    """One line for one validation error: origin, ``[section] key = value``, what was expected."""
    loc = tuple(str(part) for part in item["loc"])
    origin = origins.get(loc[:2], file_label)
    if not loc:
        return f"{origin}: {item['msg']}"
    if loc[0] not in SECTIONS:
        hint = _did_you_mean(loc[0], SECTIONS)
        return f"{origin}: unknown section [{loc[0]}]{hint}; sections are {_listing(SECTIONS)}"
    model: type[BaseModel] = SECTIONS[loc[0]]
    table = loc[0]
    for key in loc[1:]:
        fields = model.model_fields
        if key not in fields:
            hint = _did_you_mean(key, fields)
            return f"{origin}: [{table}] unknown key '{key}'{hint}; keys are {_listing(fields)}"
        annotation = fields[key].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return (
                f"{origin}: [{table}] {key} = {_shown(item.get('input'))}: expected "
                f"{_type_name(annotation)} ({_strip_prefix(item['msg'])})"
            )
        model, table = annotation, f"{table}.{key}"
    if item["type"] == "model_type":
        return f"{origin}: [{table}] must be a table, got {item['input']!r}"
    return f"{origin}: [{table}]: {_strip_prefix(item['msg'])}"


def _did_you_mean(word: str, choices: Mapping[str, Any]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _listing(choices: Mapping[str, Any]) -> str:
    return ", ".join(choices)


def _shown(value: Any) -> str:
    return "<secret>" if isinstance(value, SecretStr) else repr(value)


def _strip_prefix(message: str) -> str:
    return message.removeprefix("Value error, ")


def _type_name(annotation: Any) -> str:
    """A reader's name for a field's type: ``integer``, ``one of 'auto', 'cpu', 'gpu'``, …"""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Annotated:
        return _type_name(args[0])
    if origin is Literal:
        return "one of " + ", ".join(repr(arg) for arg in args)
    if origin in (typing.Union, types.UnionType):
        named = [_type_name(arg) for arg in args if arg is not type(None)]
        return " or ".join(named)
    if origin is tuple:
        return f"list of {_type_name(args[0])}s"
    names = {
        int: "integer",
        float: "number",
        bool: "boolean (true or false)",
        str: "string",
        Path: "path (string)",
        SecretStr: "string (secret)",
    }
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


def _path_str(path: Path | None) -> str | None:
    return str(path) if path is not None else None
