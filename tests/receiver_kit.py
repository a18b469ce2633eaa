"""Helpers for the receiver tests: units that sign, raw publishers, receiver configs and processes.

Genuine read messages are built with the unit's own functions (agent/provenance), so what
the receiver sees is byte for byte what a unit sends; forged ones start from a genuine
message and change it. Every message a test publishes as genuine, and every message a test
sees arrive, is checked against the repo's JSON Schema with the reference `jsonschema`
validator (the receiver itself uses a compiled one).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import jsonschema
import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from agent.delivery.records import encode_payload
from agent.policy.signing import key_id, write_keypair
from agent.provenance.keys import raw_public
from agent.provenance.messages import UnitSigner, wire_message
from agent.receiver.validation import read_schema

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_VALIDATOR = jsonschema.Draft202012Validator(read_schema())


def check_schema(data: bytes) -> dict:
    """The message parsed, after the reference validator accepted it (raises otherwise)."""
    obj = json.loads(data)
    SCHEMA_VALIDATOR.validate(obj)
    return obj


def new_unit(unit_id: str) -> UnitSigner:
    return UnitSigner(unit_id, Ed25519PrivateKey.generate())


def unit_pub_file(signer: UnitSigner, directory: Path) -> Path:
    """The unit's PEM key pair in `directory`, as the installer leaves it; returns the .pub."""
    directory.mkdir(parents=True, exist_ok=True)
    _, pub = write_keypair(directory / signer.unit_id, signer.key, overwrite=True)
    return pub


def department_key(directory: Path, name: str = "dept") -> tuple[X25519PrivateKey, Path, bytes]:
    """(private key, its PEM path, raw public key) of a fresh X25519 sealing key."""
    directory.mkdir(parents=True, exist_ok=True)
    key = X25519PrivateKey.generate()
    key_path, _ = write_keypair(directory / name, key, overwrite=True)
    return key, key_path, raw_public(key.public_key())


def sample_fields(index: int) -> dict:
    return {"plate": f"KT{index:05d}", "confidence": 0.9312, "camera_id": "cam-7",
            "timestamp": "2026-12-05T01:02:03.456Z",
            "location": {"lat": 41.765, "lon": -72.673, "precision_m": 100.0}}


def genuine(signer: UnitSigner, destination: str, index: int, *, seal_to: bytes | None = None,
            routing: tuple[str, ...] = (), fields: dict | None = None, prefix: str = "r") -> bytes:
    """A read message exactly as a unit's egress gate builds it (schema-checked)."""
    payload = encode_payload(fields if fields is not None else sample_fields(index))
    data = wire_message(signer, destination, f"{prefix}{index:08d}", "stolen_vehicle", 1, payload,
                        seal_to=seal_to, routing_fields=frozenset(routing)).data
    check_schema(data)
    return data


class Publisher:
    """A plain MQTT 5 publisher (QoS 1) for test messages; waits for every PUBACK."""

    def __init__(self, broker, client_id: str = "test-publisher", username: str | None = None,
                 password: str | None = None) -> None:
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id,
                                  protocol=mqtt.MQTTv5)
        if username:
            self.client.username_pw_set(username, password)
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        if broker.tls:
            import ssl
            ctx = ssl.create_default_context(cafile=str(broker.tls.ca_cert))
            ctx.load_cert_chain(str(broker.tls.client_cert), str(broker.tls.client_key))
            self.client.tls_set_context(ctx)
        self.client.connect("127.0.0.1", broker.port)
        self.client.loop_start()

    def publish(self, topic: str, messages, timeout: float = 60.0) -> None:
        infos = [self.client.publish(topic, data, qos=1) for data in messages]
        deadline = time.monotonic() + timeout
        for info in infos:
            info.wait_for_publish(max(0.1, deadline - time.monotonic()))
            assert info.is_published(), "broker did not acknowledge a test publish"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def write_config(path: Path, broker, *, client_id: str, topics, destinations, sqlite: Path | None = None,
                 dsn: str | None = None, private_keys=(), require_sealed: bool = False,
                 share_group: str = "dept", batch_size: int = 200, batch_wait_ms: float = 20,
                 status_prefix: str | None = "plategate", extra_broker: str = "") -> Path:
    """A receiver TOML config for `broker` (TLS with its CA and client cert when it has TLS)."""
    lines = ["[broker]", f'url = "{broker.url}"', f'client_id = "{client_id}"',
             f"topics = {json.dumps(list(topics))}", f'share_group = "{share_group}"']
    if status_prefix:
        lines.append(f'status_prefix = "{status_prefix}"')
    if broker.tls:
        lines += [f'ca_file = "{broker.tls.ca_cert}"', f'client_cert = "{broker.tls.client_cert}"',
                  f'client_key = "{broker.tls.client_key}"',
                  f'server_key_sha256 = "{broker.tls.server_key_sha256}"']
    if extra_broker:
        lines.append(extra_broker)
    lines += ["", "[accept]", f"destinations = {json.dumps(list(destinations))}",
              f"require_sealed = {'true' if require_sealed else 'false'}",
              f"private_keys = {json.dumps([str(p) for p in private_keys])}",
              "", "[storage]", f"batch_size = {batch_size}", f"batch_wait_ms = {batch_wait_ms}"]
    if dsn:
        lines.append(f'dsn = "{dsn}"')
    else:
        lines.append(f'sqlite = "{sqlite}"')
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


def receiver_process(config: Path, log_path: Path) -> subprocess.Popen:
    """`plategate receive --config FILE` in its own process (stderr to `log_path`)."""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    log = open(log_path, "ab")
    try:
        return subprocess.Popen([sys.executable, "-m", "agent", "--log-level", "INFO", "receive",
                                 "--config", str(config)], cwd=ROOT, env=env,
                                stdout=subprocess.DEVNULL, stderr=log)
    finally:
        log.close()


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> int:
    if proc.poll() is None:
        proc.terminate()
        try:
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait(timeout)


def wait_until(predicate, timeout: float = 30.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


class ThreadedReceiver:
    """A Receiver running on a thread of the test process (for tests that need no SIGKILL)."""

    def __init__(self, config_path: Path) -> None:
        from agent.receiver.config import load_receiver_config
        from agent.receiver.service import Receiver
        from agent.receiver.store import open_store
        config = load_receiver_config(config_path)
        self.store = open_store(config.storage.dsn, config.storage.sqlite)
        self.stop = threading.Event()
        self.receiver = Receiver(config, self.store, self.stop)
        self.thread = threading.Thread(target=self.receiver.run, daemon=True)

    def start(self, timeout: float = 15.0) -> "ThreadedReceiver":
        self.thread.start()
        assert self.receiver.subscribed.wait(timeout), "receiver did not subscribe"
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(15)
        self.store.close()


__all__ = ["Publisher", "ThreadedReceiver", "check_schema", "department_key", "genuine", "key_id",
           "new_unit", "receiver_process", "sample_fields", "stop_process", "unit_pub_file",
           "wait_until", "write_config"]
