"""The receiver's config: one TOML file per receiver process (`plategate receive --config FILE`).

Same rules as the device config (agent/config): defaults live here only, unknown keys are
errors, every problem is reported with its key path, relative paths are resolved against
the file's folder. Several receivers of one department share everything but
`broker.client_id`, which must be stable per process: a receiver restarted under the same
id gets back from the broker every read it had not acknowledged.
"""
from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from agent.config.fields import setting
from agent.config.loader import Problem, load_toml_as
from agent.config.schema import ID_PATTERN
from agent.delivery.mqtt_link import parse_broker_url
from agent.policy.schema import ID_RE
from agent.policy.topics import validate_topic


@dataclass(frozen=True)
class BrokerSection:
    url: str = setting(help="Broker to subscribe to: mqtts://host:port (mqtt:// only to a loopback "
                            "address, for tests).")
    client_id: str = setting(help="MQTT client id of this receiver process; stable across restarts "
                                  "(its unacknowledged reads are redelivered to it).",
                             pattern=ID_PATTERN, reason="is not a valid id")
    topics: tuple[str, ...] = setting(help="Read topics of the department's destinations; each is "
                                           "subscribed as $share/<share_group>/<topic> (MQTT 5), "
                                           "wildcards allowed.")
    share_group: str = setting("plategate", help="Shared-subscription group: receivers with the same "
                                                 "group split the reads between them.",
                               pattern=r"[A-Za-z0-9._-]{1,64}", reason="is not a valid group name")
    ca_file: Path | None = setting(None, help="CA certificate (PEM) the broker's certificate must chain to.")
    server_key_sha256: str | None = setting(None, help="SHA-256 (hex) of the broker's public key, checked "
                                                       "after the TLS handshake.",
                                            pattern=r"[0-9a-f]{64}", reason="is not 64 lower-case hex")
    client_cert: Path | None = setting(None, help="The department's client certificate (PEM).")
    client_key: Path | None = setting(None, help="Its private key (PEM).", secret=True)
    username: str | None = setting(None, help="MQTT user name.")
    password: str | None = setting(None, help="MQTT password.", secret=True)
    keepalive_s: int = setting(30, help="MQTT keep-alive in seconds.", min=5, max=3600)
    session_expiry_s: int = setting(86400, help="How long the broker keeps this receiver's session "
                                                "(and queues its reads) while it is down.",
                                    min=60, max=30 * 86400)
    receive_maximum: int = setting(1000, help="Reads the broker may have in flight to this receiver "
                                              "(unacknowledged); bounds its memory.", min=1, max=65535)
    status_prefix: str | None = setting("plategate", help="Units' status topics <prefix>/<unit>/status "
                                                         "and /heartbeat feed the health table; omit to "
                                                         "disable.")


@dataclass(frozen=True)
class AcceptSection:
    destinations: tuple[str, ...] = setting(help="Destination ids (as in the policy) this department "
                                                 "receives; a read for any other is rejected.")
    require_sealed: bool = setting(False, help="Reject reads that arrive in clear.")
    private_keys: tuple[Path, ...] = setting(default_factory=tuple,
                                             help="The department's X25519 private keys (PEM) that sealed "
                                                  "reads are opened with (several during a key rotation).",
                                             secret=True)


@dataclass(frozen=True)
class StorageSection:
    sqlite: Path = setting(Path("reads.sqlite"), help="SQLite database (used unless dsn is set).")
    dsn: str | None = setting(None, help="PostgreSQL connection string (postgresql://...); needs the "
                                         "'receiver' extra (psycopg).", secret=True)
    batch_size: int = setting(500, help="Reads committed per transaction at most.", min=1, max=100000)
    batch_wait_ms: float = setting(20.0, help="How long a partial batch waits for more reads.",
                                   min=0, max=10000)
    samples_per_reason: int = setting(20, help="Rejected messages kept for inspection, per reason.",
                                      min=0, max=100000)
    offline_after_s: float = setting(120.0, help="A unit not heard from for this long shows as offline "
                                                 "in the health table.", min=1, max=86400 * 7)


@dataclass(frozen=True)
class ReceiverConfig:
    broker: BrokerSection
    accept: AcceptSection
    storage: StorageSection = setting(default_factory=StorageSection, help="Where reads are stored.")


# --- cross-field rules -----------------------------------------------------------------------

def broker_url_valid(config: ReceiverConfig) -> list[Problem]:
    try:
        tls, host, _ = parse_broker_url(config.broker.url)
    except ValueError as exc:
        return [Problem("broker.url", str(exc))]
    if not tls:
        try:
            loopback = ipaddress.ip_address(host).is_loopback
        except ValueError:
            loopback = host == "localhost"
        if not loopback:
            return [Problem("broker.url", f"{config.broker.url!r}: reads are received over TLS "
                                          f"(mqtts://); mqtt:// only to a loopback address")]
    return []


def client_cert_has_key(config: ReceiverConfig) -> list[Problem]:
    if (config.broker.client_cert is None) != (config.broker.client_key is None):
        return [Problem("broker", "client_cert and client_key go together")]
    return []


def topics_valid(config: ReceiverConfig) -> list[Problem]:
    problems = []
    if not config.broker.topics:
        problems.append(Problem("broker.topics", "needs at least one topic"))
    for i, topic in enumerate(config.broker.topics):
        try:
            # Wildcards are fine in a subscription: check the rest with the publish rule.
            validate_topic(topic.replace("+", "x").replace("#", "x"))
        except ValueError as exc:
            problems.append(Problem(f"broker.topics[{i}]", str(exc)))
    return problems


def destinations_valid(config: ReceiverConfig) -> list[Problem]:
    problems = []
    if not config.accept.destinations:
        problems.append(Problem("accept.destinations", "needs at least one destination id"))
    for i, dest in enumerate(config.accept.destinations):
        if not ID_RE.match(dest):
            problems.append(Problem(f"accept.destinations[{i}]", f"{dest!r} is not a destination id"))
    return problems


def sealed_needs_key(config: ReceiverConfig) -> list[Problem]:
    if config.accept.require_sealed and not config.accept.private_keys:
        return [Problem("accept.private_keys", "is empty, but require_sealed is set: no read could "
                                               "ever be opened")]
    return []


RULES = (broker_url_valid, client_cert_has_key, topics_valid, destinations_valid, sealed_needs_key)


def load_receiver_config(path: Path) -> ReceiverConfig:
    """Read and validate a receiver config; raise ConfigError naming every problem."""
    return load_toml_as(ReceiverConfig, path, RULES)
