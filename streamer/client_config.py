"""``[kafka.client_config]``: client properties that ``[kafka]``'s named keys do not cover.

A cluster may ask for what the named keys cannot say: an OAUTHBEARER token endpoint, a Kerberos
service name, a socket or fetch tuning. The table is passed to the client unchanged, in the
client's own names: librdkafka property names (``sasl.oauthbearer.method``) for
``client = "librdkafka"``, kafka-python keyword names (``sasl_oauth_token_provider`` cannot be
written in TOML, but ``sasl_kerberos_service_name`` can) for kafka-python.

Checked when the config is read, so a typo fails at start, not silently:
- a name the client does not know is refused (librdkafka's own parser judges, kafka-python's
  ``DEFAULT_CONFIG`` tables list its keywords);
- a name a ``[kafka]`` key already sets, or one tandem's delivery guarantees rest on (offset
  commits, idempotence, acknowledgements, isolation), is refused with the reason.
Values of secret-looking names (password, secret, token, key) are masked wherever the config is
shown or logged.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from typing import Any

SECRET_NAME = re.compile(r"password|secret|token|(^|[._])key($|[._])|jaas", re.IGNORECASE)
"""Names whose values are secrets: ``sasl.password``, ``sasl.oauthbearer.client.secret``,
``ssl.key.pem``, ``sasl.jaas.config``."""

OWNED = {
    "librdkafka": {
        "bootstrap.servers": "[kafka].bootstrap",
        "metadata.broker.list": "[kafka].bootstrap",
        "client.id": "[kafka].client_id",
        "group.id": "[kafka].group_id",
        "security.protocol": "[kafka].security_protocol",
        "sasl.mechanism": "[kafka].sasl_mechanism",
        "sasl.mechanisms": "[kafka].sasl_mechanism",
        "sasl.username": "[kafka].sasl_plain_username",
        "sasl.password": "[kafka].sasl_plain_password",
        "session.timeout.ms": "[kafka].session_timeout_ms",
        "auto.offset.reset": "[kafka].auto_offset_reset",
        "enable.auto.commit": "tandem commits only after a batch's output is safe",
        "enable.auto.offset.store": "tandem commits only after a batch's output is safe",
        "enable.idempotence": "tandem's producer is idempotent",
        "acks": "tandem produces with acks=all",
        "isolation.level": "tandem reads committed records only when transactional",
        "transactional.id": "[kafka].transactional",
        "partition.assignment.strategy": "tandem's rebalance handling depends on it",
    },
    "kafka-python": {
        "bootstrap_servers": "[kafka].bootstrap",
        "client_id": "[kafka].client_id",
        "group_id": "[kafka].group_id",
        "security_protocol": "[kafka].security_protocol",
        "sasl_mechanism": "[kafka].sasl_mechanism",
        "sasl_plain_username": "[kafka].sasl_plain_username",
        "sasl_plain_password": "[kafka].sasl_plain_password",
        "ssl_cafile": "[kafka].ssl_cafile",
        "ssl_certfile": "[kafka].ssl_certfile",
        "ssl_keyfile": "[kafka].ssl_keyfile",
        "ssl_password": "[kafka].ssl_password",
        "ssl_check_hostname": "[kafka].ssl_check_hostname",
        "session_timeout_ms": "[kafka].session_timeout_ms",
        "request_timeout_ms": "[kafka].request_timeout_ms",
        "auto_offset_reset": "[kafka].auto_offset_reset",
        "enable_auto_commit": "tandem commits only after a batch's output is safe",
        "enable_idempotence": "tandem's producer is idempotent",
        "acks": "tandem produces with acks=all",
        "isolation_level": "tandem reads committed records only when transactional",
        "transactional_id": "[kafka].transactional",
        "partition_assignment_strategy": "tandem's rebalance handling depends on it",
        "key_deserializer": "tandem reads raw bytes",
        "value_deserializer": "tandem reads raw bytes",
        "key_serializer": "tandem writes raw bytes",
        "value_serializer": "tandem writes raw bytes",
    },
}
"""Per client, the names the table may not set, and why."""


def check_client_config(client: str, table: Mapping[str, Any]) -> None:
    """Raise ``ValueError`` naming each property of ``table`` that ``client`` does not know or
    that tandem sets itself."""
    problems = [
        f"{name!r} is set by tandem ({why})" for name, why in OWNED[client].items() if name in table
    ]
    for name, value in table.items():
        if not isinstance(value, str | int | float | bool):
            problems.append(f"{name!r} must be a string, number or boolean, not {value!r}")
    unknown = _unknown_to(client, [name for name in table if name not in OWNED[client]])
    problems += [f"{name!r} is not a {client} property{hint}" for name, hint in unknown]
    if problems:
        raise ValueError("[kafka.client_config]: " + "; ".join(problems))


def masked_client_config(table: Mapping[str, Any]) -> dict[str, Any]:
    """``table`` with the values of secret-looking names replaced by asterisks."""
    return {name: "**********" if SECRET_NAME.search(name) else v for name, v in table.items()}


def secret_values(table: Mapping[str, Any]) -> tuple[str, ...]:
    """The values of secret-looking names, for the log redaction."""
    return tuple(str(v) for name, v in table.items() if SECRET_NAME.search(name) and str(v))


def kafka_python_options(cls: type, options: Mapping[str, Any], **own: Any) -> dict[str, Any]:
    """Keyword arguments for kafka-python's ``cls`` (consumer, producer or admin client): the
    call site's ``own`` settings, then the part of ``options`` (``KafkaConfig.client_options``,
    ``[kafka.client_config]`` included) that ``cls`` takes, which wins over ``own``. Each class
    refuses keywords it does not know, and the table may hold one meant for another
    (``max_poll_records`` is the consumer's alone)."""
    known = cls.DEFAULT_CONFIG  # type: ignore[attr-defined]  # kafka-python is untyped
    return {**own, **{name: value for name, value in options.items() if name in known}}


def _unknown_to(client: str, names: list[str]) -> list[tuple[str, str]]:
    """Each of ``names`` that ``client`` does not know, with a hint at the nearest it does
    (kafka-python's, whose names are listed; librdkafka's parser names none)."""
    if not names:
        return []
    if client == "kafka-python":
        from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

        known = {
            *KafkaConsumer.DEFAULT_CONFIG,
            *KafkaProducer.DEFAULT_CONFIG,
            *KafkaAdminClient.DEFAULT_CONFIG,
        }
        return [(name, _nearest(name, known)) for name in names if name not in known]
    try:
        from confluent_kafka import KafkaException, Producer
    except ImportError:  # the extra is missing: the daemon says so when it starts the client
        return []
    unknown = []
    for name in names:
        probe = {name: "1" if name.endswith((".ms", ".bytes")) else "x", "log_level": 0}
        try:  # a producer takes consumer properties too (it warns that it ignores them)
            Producer(probe)
        except KafkaException as error:
            if "No such configuration property" in str(error):
                unknown.append((name, ""))
        except (TypeError, ValueError):
            pass  # known, only the probe value is wrong for it
    return unknown


def _nearest(name: str, known: set[str]) -> str:
    close = difflib.get_close_matches(name, sorted(known), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""
