"""The README's first command: replay a synthetic camera clip through the real agent.

It starts one local TLS mosquitto per destination (a throw-away CA made at run time, so
the unit checks each broker's key pin as in the field), signs a copy of the demo policy
(test key) naming those brokers and pins, runs `plategate run` on a generated clip until
the clip ends, and prints what each destination received. The federal immigration
destination is listed in the policy but prohibited, so it must receive nothing, and its
broker's own log must show no connection from the unit at all (the demo prints that log's
connection lines as the evidence).
"""
from __future__ import annotations

import argparse
import collections
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.audit.records import expanded_records  # noqa: E402
from agent.policy.bundle import sign_bundle  # noqa: E402
from agent.policy.signing import load_private_key  # noqa: E402
from tests.mqtt_broker import MosquittoBroker, find_mosquitto, make_tls_files  # noqa: E402

POLICIES = ROOT / "firmware_config" / "policies"
TEST_KEY = POLICIES / "test-keys" / "department-TEST-ONLY.key"
TEST_PUB = POLICIES / "test-keys" / "department-TEST-ONLY.pub"
CLIP_SEED = 7


def main() -> int:
    parser = argparse.ArgumentParser(description="Run the PlateGate demo on a synthetic replay clip.")
    parser.add_argument("--work", type=Path, default=ROOT / "var" / "demo", help="working folder (recreated)")
    parser.add_argument("--clip-dir", type=Path, default=ROOT / "var" / "clip",
                        help="where the generated replay clip is kept between runs")
    parser.add_argument("--models", type=Path, default=ROOT / "models", help="models folder (manifest.json)")
    parser.add_argument("--timeout", type=float, default=180, help="longest run of the agent, seconds")
    args = parser.parse_args()

    if find_mosquitto() is None:
        print("mosquitto not found: install it with `sudo apt-get install mosquitto` (make demo does this)")
        return 2
    work: Path = args.work
    clip = args.clip_dir / f"demo-{CLIP_SEED}.mp4"
    if not clip.exists():
        print(f"generating the replay clip {clip} (seed {CLIP_SEED}) ...", flush=True)
        clip.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([sys.executable, str(ROOT / "tools" / "synth" / "make_clip.py"), "--out", str(clip),
                        "--seed", str(CLIP_SEED)], check=True)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)

    policy = json.loads((POLICIES / "demo.json").read_text())
    pki = make_tls_files(work / "pki")          # one throw-away CA, a server key per broker
    brokers: dict[str, MosquittoBroker] = {}
    try:
        for dest in policy["destinations"]:
            tls = make_tls_files(work / "pki" / dest["id"], ca=pki)
            broker = brokers[dest["id"]] = MosquittoBroker(work / f"broker-{dest['id']}", tls=tls).start()
            dest["transport"]["broker_url"] = broker.url
            dest["transport"]["server_key_sha256"] = broker.pin
        home = brokers[policy["destinations"][0]["id"]]      # the county's broker also takes the status
        bundle = work / "policy.bundle"
        bundle.write_bytes(sign_bundle(policy, load_private_key(TEST_KEY)))
        config = work / "plategate.toml"
        config.write_text(DEMO_CONFIG.format(clip=clip, state=work / "state", bundle=bundle, pub=TEST_PUB,
                                             models=args.models, port=home.port, pin=home.pin))
        received = subscribe_all(brokers)
        print(f"agent: replaying {clip.name} with policy '{policy['agency']}' v{policy['version']}; "
              + ", ".join(f"{d} broker at port {b.port}" for d, b in brokers.items()) + " (TLS, key pinned) ...",
              flush=True)
        started = time.monotonic()
        result = subprocess.run([sys.executable, "-m", "agent", "--log-level", "WARNING", "run",
                                 "--config", str(config)], timeout=args.timeout)
        time.sleep(1.0)  # let the last PUBLISHes reach the subscriber
        print(f"agent exited with code {result.returncode} after {time.monotonic() - started:.1f} s\n")
        summary = summarise(policy, received, work / "state" / "audit.jsonl")
        summary["connections"] = unit_connections(policy, brokers)
        print_summary(summary, clip)
        (work / "summary.json").write_text(json.dumps(summary, indent=2))
        return result.returncode
    finally:
        for broker in brokers.values():
            broker.stop()


OBSERVER_ID = "demo-observer"


DEMO_CONFIG = """\
# Written by tools/demo.py: a unit replaying a synthetic clip against a local broker.
[unit]
id = "demo-unit"
camera_id = "demo-cam"
latitude = 41.7637
longitude = -72.6851
state_dir = "{state}"

[logging]
level = "WARNING"

[source]
kind = "video_file"
path = "{clip}"
fps = 10.0
exit_at_end = true

[recognizer]
models_dir = "{models}"

[policy]
bundle = "{bundle}"
trusted_keys = ["{pub}"]

[mqtt.status]
url = "mqtts://127.0.0.1:{port}"
server_key_sha256 = "{pin}"
"""


def subscribe_all(brokers: dict[str, MosquittoBroker]) -> dict[str, list[dict]]:
    """Everything published on the brokers, by topic (a '#' subscriber sees every byte that leaves).

    Each observer connects with the client id `demo-observer`, so the brokers' logs tell its
    connections from the unit's.
    """
    received: dict[str, list[dict]] = collections.defaultdict(list)
    for broker in brokers.values():
        ready = threading.Event()
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=OBSERVER_ID)

        def on_connect(client, userdata, flags, reason_code, properties):
            client.subscribe("#", qos=1)

        def on_subscribe(*_, ready=ready):
            ready.set()

        def on_message(client, userdata, message):
            try:
                body = json.loads(message.payload)
            except ValueError:
                body = {"raw": message.payload.decode(errors="replace")}
            received[message.topic].append(body)

        client.on_connect, client.on_subscribe, client.on_message = on_connect, on_subscribe, on_message
        client.tls_set(ca_certs=str(broker.tls.ca_cert))
        client.connect("127.0.0.1", broker.port)
        client.loop_start()
        ready.wait(10)
    return received


def unit_connections(policy: dict, brokers: dict[str, MosquittoBroker]) -> dict[str, dict]:
    """Per destination, from its broker's own log: how many connections it accepted, and the
    client ids of those that were not the demo's observer (i.e. the unit's)."""
    out = {}
    for dest_id, broker in brokers.items():
        ids = broker.client_ids()
        accepted = [line for line in broker.connections() if "New connection from" in line
                    or "Client connection from" in line]
        out[dest_id] = {"accepted": len(accepted), "observer": ids.count(OBSERVER_ID),
                        "unit_client_ids": [i for i in ids if i != OBSERVER_ID],
                        "log": str(broker.log_path)}
    return out


def summarise(policy: dict, received: dict[str, list[dict]], audit_path: Path) -> dict:
    """Per destination: the policy's decisions (from the audit log) and what its topic received."""
    decisions: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    if audit_path.exists():
        # A read's decisions sit inside its read.accepted record; expanded_records unpacks them.
        for record in expanded_records(audit_path, "decision"):
            fields = record["fields"]
            if not fields.get("recheck"):
                verdict = "allowed" if fields.get("allowed") else f"denied by {fields.get('rule_id')}"
                decisions[fields.get("destination")][verdict] += 1
    topics = {d["transport"]["topic"] for d in policy["destinations"]}
    summary = {"destinations": [], "unexpected_topics": sorted(t for t in received if t not in topics
                                                                and not t.endswith(("/status", "/heartbeat")))}
    for dest in policy["destinations"]:
        messages = received.get(dest["transport"]["topic"], [])
        summary["destinations"].append({
            "id": dest["id"], "class": dest["class"], "decisions": dict(decisions[dest["id"]]),
            "received": [m.get("read", {}).get("plate") or m.get("read", {}).get("plate_hmac", "?")[:12]
                         for m in messages],
        })
    for entry in summary["destinations"]:
        entry["prohibited"] = entry["class"] in set(policy["prohibitions"]["classes"])
    prohibited = [d for d in summary["destinations"] if d["prohibited"]]
    summary["prohibited_received"] = sum(len(d["received"]) for d in prohibited)
    return summary


def print_summary(summary: dict, clip: Path) -> None:
    truth_path = clip.with_name(clip.name + ".json")  # sidecar written by make_clip
    if truth_path.exists():
        texts = [p["text"] for p in json.loads(truth_path.read_text())["plates"]]
        print(f"clip: {len(texts)} vehicles, plates {', '.join(texts)}")
    print("per destination (policy decisions from the audit log; what its broker topic actually received):")
    for dest in summary["destinations"]:
        verdicts = ", ".join(f"{n} {v}" for v, n in sorted(dest["decisions"].items())) or "no decisions"
        got = dest["received"]
        print(f"  {dest['id']:<16} {dest['class']:<20} policy: {verdicts}")
        print(f"  {'':<16} {'':<20} received {len(got)} read(s){': ' + ', '.join(got) if got else ''}")
    if summary["unexpected_topics"]:
        print(f"  unexpected topics: {summary['unexpected_topics']}")
    leaked = summary["prohibited_received"]
    print("\nprohibited destinations received nothing: " + ("YES" if leaked == 0 else f"NO ({leaked} leaked)"))
    print("connections each destination's broker logged (its own log, not a subscriber's view):")
    for dest_id, seen in summary["connections"].items():
        units = seen["unit_client_ids"]
        print(f"  {dest_id:<16} {seen['accepted']} connection(s) accepted: {seen['observer']} by the demo's "
              f"observer, {len(units)} by the unit{' (' + ', '.join(sorted(set(units))) + ')' if units else ''}"
              f"  [{seen['log']}]")
    contacted = [d["id"] for d in summary["destinations"] if d["prohibited"] and
                 summary["connections"][d["id"]]["accepted"] != summary["connections"][d["id"]]["observer"]]
    summary["prohibited_connected"] = contacted
    print("prohibited destinations' brokers saw no connection from the unit: "
          + ("YES" if not contacted else f"NO ({', '.join(contacted)})"))


if __name__ == "__main__":
    sys.exit(main())
