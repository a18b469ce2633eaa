"""Transparency report: its numbers equal an independent recount from the raw log."""
from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.audit.log import AuditLog
from agent.audit.report import build_report, parse_date, render
from agent.cli import main

DESTS = {"county-records": "local_police", "ct-fusion-center": "state_fusion_center",
         "ice-era": "federal_immigration", "ny-spd": "state_police"}
DENY_RULES = ["prohibition:class:federal_immigration", "prohibition:jurisdiction:US-NY",
              "rule:ctic-hits:not-a-hit", "retention:expired", "prohibition:purpose:immigration_enforcement"]
PURPOSES = ["stolen_vehicle", "amber_alert", "felony_warrant"]
T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z


class Clock:
    def __init__(self, rng: random.Random) -> None:
        self.t, self.rng = T0, rng

    def __call__(self) -> float:
        self.t += self.rng.uniform(0, 120)
        return self.t


def synth_log(path: Path, seed: int, n_reads: int = 400, batched: bool = False) -> None:
    """A random log. batched=True writes what the outbox writes: a read's decisions inside its
    read.accepted record, and delivery.sent records listing several reads."""
    rng = random.Random(seed)
    log = AuditLog(path, clock=Clock(rng))
    log.record("policy.installed", version=1, digest="d1", source="serial")
    version = 1
    unsent: dict[str, list[str]] = {dest: [] for dest in DESTS}

    def send(dest: str) -> None:
        if unsent[dest]:
            log.record("delivery.sent", destination=dest, count=len(unsent[dest]),
                       read_ids=unsent[dest], seqs=list(range(len(unsent[dest]))),
                       purposes=["x"] * len(unsent[dest]), policy_versions=[1] * len(unsent[dest]))
            unsent[dest] = []

    for i in range(n_reads):
        rid = f"read-{seed}-{i}"
        hit_purposes = rng.sample(PURPOSES, rng.choice([0, 0, 0, 1, 2]))
        entries = []
        if not batched:
            log.record("read.accepted", read_id=rid, camera_id="cam", hit=bool(hit_purposes), purposes=hit_purposes)
        for dest, cls in DESTS.items():
            if rng.random() < 0.5:
                shared = [p for p in hit_purposes if rng.random() < 0.8]
                entries.append(dict(destination=dest, allowed=True, rule_id=f"{dest}-rule", reason="ok",
                                    purposes=shared, dest_class=cls))
                if rng.random() < 0.9:
                    if batched:
                        unsent[dest].append(rid)
                    else:
                        log.record("delivery.sent", read_id=rid, destination=dest)
            else:
                entries.append(dict(destination=dest, allowed=False, rule_id=rng.choice(DENY_RULES),
                                    reason="no", purposes=[], dest_class=cls))
        if batched:
            log.record("read.accepted", read_id=rid, camera_id="cam", hit=bool(hit_purposes),
                       purposes=hit_purposes, policy_version=1, policy_digest="d1", decisions=entries)
            for dest in DESTS:
                if rng.random() < 0.3:
                    send(dest)
        else:
            for entry in entries:
                log.record("decision", read_id=rid, hit=bool(hit_purposes), **entry)
        if rng.random() < 0.1:
            log.record("decision", read_id=rid, destination="county-records", allowed=rng.random() < 0.5,
                       rule_id="county-all", reason="re-check", purposes=[], hit=False,
                       dest_class="local_police", recheck=True)
        if rng.random() < 0.05:
            log.record("retention.deleted", count=rng.randint(1, 50), hits=0)
        if rng.random() < 0.01:
            log.record("policy.refused", reason="rollback", source="mqtt")
        if rng.random() < 0.02:   # a restart re-installs the active policy: not a change
            log.record("policy.installed", version=version, digest=f"d{version}", source="persisted")
        if rng.random() < 0.01:
            version += 1
            log.record("policy.installed", version=version, digest=f"d{version}", source="serial")
        if rng.random() < 0.01:
            log.record("config.changed", key="mqtt.port")
    for dest in DESTS:
        send(dest)
    log.close()


def recount(path: Path, since: float, until: float | None) -> dict:
    """Deliberately naive: re-read the raw JSON lines and count each figure directly."""
    recs = [json.loads(x) for x in path.read_text().splitlines()]
    installs = [r for r in recs if r["event"] == "policy.installed"]
    changed = [r for prev, r in zip([None] + installs, installs)
               if prev is None or prev["fields"]["version"] != r["fields"]["version"]]
    recs = [r for r in recs if r["time"] >= since and (until is None or r["time"] < until)]
    dec = [r["fields"] for r in recs if r["event"] == "decision" and not r["fields"].get("recheck")]
    # A read.accepted record carrying its decisions counts each of them.
    dec += [dict(e, hit=r["fields"]["hit"]) for r in recs if r["event"] == "read.accepted"
            for e in r["fields"].get("decisions", [])]
    seen = {r["fields"]["read_id"] for r in recs if r["event"] in ("read.accepted", "decision")}
    hits = {r["fields"]["read_id"] for r in recs if r["event"] in ("read.accepted", "decision") and r["fields"]["hit"]}
    by_purpose = Counter()
    for d in dec:
        if d["allowed"]:
            for p in d["purposes"] or ["(all reads)"]:
                by_purpose[p] += 1
    return {
        "seen": len(seen), "hits": len(hits), "decisions": len(dec),
        "rechecks": sum(r["event"] == "decision" and bool(r["fields"].get("recheck")) for r in recs),
        "allowed": sum(d["allowed"] for d in dec), "denied": sum(not d["allowed"] for d in dec),
        "by_destination": Counter(d["destination"] for d in dec if d["allowed"]),
        "by_class": Counter(d["dest_class"] for d in dec if d["allowed"]),
        "by_purpose": by_purpose,
        "by_prohibition": Counter(d["rule_id"] for d in dec if not d["allowed"] and d["rule_id"].startswith("prohibition:")),
        "denied_by_dest": Counter(d["destination"] for d in dec if not d["allowed"]),
        "sent": Counter({d: sum(len(r["fields"].get("read_ids", [None])) for r in recs
                                if r["event"] == "delivery.sent" and r["fields"]["destination"] == d)
                         for d in {r["fields"]["destination"] for r in recs if r["event"] == "delivery.sent"}}),
        "deleted": sum(r["fields"]["count"] for r in recs if r["event"] == "retention.deleted"),
        "policy_changes": sum(r in recs for r in changed),
        "policy_reinstalls": sum(r in recs and r not in changed for r in installs),
        "policy_other": sum(r["event"] in ("policy.refused", "policy.expired") for r in recs),
        "config_changes": sum(r["event"] == "config.changed" for r in recs),
    }


@pytest.fixture(scope="module")
def synthesized(tmp_path_factory) -> Callable[[int, bool], Path]:
    """(seed, batched) -> the path of that random log, written once for the module: the report
    only reads it, so the three windows of a log share one file."""
    made: dict[tuple[int, bool], Path] = {}

    def get(seed: int, batched: bool) -> Path:
        if (seed, batched) not in made:
            path = tmp_path_factory.mktemp("synth") / "audit.jsonl"
            synth_log(path, seed, batched=batched)
            made[seed, batched] = path
        return made[seed, batched]

    return get


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("window", [(None, None), (T0 + 3600 * 2, None), (T0 + 3600, T0 + 3600 * 5)])
def test_report_equals_independent_recount(synthesized, seed, window, batched) -> None:
    path = synthesized(seed, batched)
    since, until = window
    report = build_report(path, since, until)
    expect = recount(path, since or 0.0, until)
    assert report["integrity"]["ok"]
    assert report["reads"] == {"seen": expect["seen"], "hits": expect["hits"]}
    assert report["decisions"] == {"total": expect["decisions"], "allowed": expect["allowed"],
                                   "denied": expect["denied"], "rechecks": expect["rechecks"]}
    assert report["shares"]["by_destination"] == dict(expect["by_destination"])
    assert report["shares"]["by_class"] == dict(expect["by_class"])
    assert report["shares"]["by_purpose"] == dict(expect["by_purpose"])
    assert report["denials"]["by_prohibition"] == dict(expect["by_prohibition"])
    assert report["denials"]["by_destination"] == dict(expect["denied_by_dest"])
    assert report["deliveries"]["sent"] == dict(expect["sent"])
    assert report["deletions"]["reads_deleted"] == expect["deleted"]
    assert len(report["policy_changes"]) == expect["policy_changes"]
    assert report["policy_reinstalls"] == expect["policy_reinstalls"]
    assert len(report["policy_refusals_and_expiries"]) == expect["policy_other"]
    assert report["config_changes"] == expect["config_changes"]
    assert expect["decisions"] > 0 or since is not None


def test_formats_and_cli(tmp_path, capsys) -> None:
    path = tmp_path / "audit.jsonl"
    synth_log(path, 7, n_reads=50)
    report = build_report(path, parse_date("2027-01-01"))
    md = render(report, "md")
    assert "| reads seen | %d |" % report["reads"]["seen"] in md
    html = render(report, "html")
    assert "<svg" in html and "</svg>" in html and "<script" not in html
    assert main(["audit", "report", str(path), "--since", "2027-01-01", "--format", "json",
                 "--out", str(tmp_path / "r.json")]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["reads"] == report["reads"]
    assert main(["audit", "report", str(path), "--since", "2027-01-01", "--format", "html"]) == 0
    assert "<svg" in capsys.readouterr().out
    assert main(["audit", "report", str(path), "--since", "yesterday"]) == 2


def test_report_escapes_html(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.record("decision", read_id="r", destination="<img src=x onerror=alert(1)>", allowed=True,
                   rule_id="r", reason="", purposes=[], hit=False, dest_class="other")
    html = render(build_report(path), "html")
    assert "<img" not in html and "&lt;img" in html


def test_report_flags_a_tampered_log(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    synth_log(path, 9, n_reads=20)
    data = path.read_bytes().splitlines(keepends=True)
    del data[5]
    path.write_bytes(b"".join(data))
    report = build_report(path)
    assert report["integrity"]["ok"] is False and "seq 6" in report["integrity"]["problem"]
    assert "FAILED" in render(report, "md")


def test_report_of_a_tampered_log_is_written_and_exits_2(tmp_path, capsys) -> None:
    """The auditor gets the report (saying FAILED), and a script gets a failing status."""
    path = tmp_path / "audit.jsonl"
    synth_log(path, 9, n_reads=20)
    data = path.read_bytes().splitlines(keepends=True)
    del data[5]
    path.write_bytes(b"".join(data))
    out = tmp_path / "report.md"
    assert main(["audit", "report", str(path), "--out", str(out)]) == 2
    assert "Log integrity: FAILED" in out.read_text()
    assert "log integrity FAILED" in capsys.readouterr().err


def test_audit_verify_cli(tmp_path, capsys) -> None:
    keys = Path(__file__).resolve().parents[1] / "firmware_config" / "policies" / "test-keys"
    from agent.policy.signing import load_private_key
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, load_private_key(keys / "unit-TEST-ONLY.key"), checkpoint_every=5) as log:
        for i in range(12):
            log.record("read.accepted", read_id=str(i), hit=False)
    assert main(["audit", "verify", str(path), "--unit-key", str(keys / "unit-TEST-ONLY.pub")]) == 0
    assert "OK" in capsys.readouterr().out
    data = path.read_bytes().splitlines(keepends=True)
    data[2], data[3] = data[3], data[2]
    path.write_bytes(b"".join(data))
    assert main(["audit", "verify", str(path)]) == 2
    out = capsys.readouterr().out
    assert "FAILED" in out and "first bad record: seq 3 (line 3)" in out


def test_record_helpers_feed_the_report(tmp_path) -> None:
    """The helpers other stages use produce records the report counts."""
    from agent.audit.records import record_decision, record_read
    from agent.policy.bundle import parse_policy_json
    from agent.policy.engine import decide
    from agent.reads import HotlistHit, ReadEvent

    policy = parse_policy_json((Path(__file__).resolve().parents[1] / "firmware_config/policies/demo.json").read_bytes())
    path = tmp_path / "audit.jsonl"
    now = 1_800_000_000.0
    with AuditLog(path) as log:
        for i in range(6):
            read = ReadEvent("ABC", 0.9, now - 1, "cam", read_id=f"r{i}",
                             hits=(HotlistHit("l", 1, "stolen_vehicle", "s"),) if i < 2 else ())
            record_read(log, read)
            for dest in policy.destinations:
                record_decision(log, read, dest, decide(read, dest, policy, now))
    report = build_report(path)
    assert report["reads"] == {"seen": 6, "hits": 2}
    assert report["shares"]["by_destination"] == {"county-records": 6}
    assert report["shares"]["by_purpose"] == {"(all reads)": 4, "stolen_vehicle": 2}
    assert report["denials"]["by_prohibition"] == {"prohibition:class:federal_immigration": 6}
    assert "ABC" not in path.read_text()  # no plate text in the audit log


def test_audit_verify_json(tmp_path, capsys) -> None:
    path = tmp_path / "audit.jsonl"
    with AuditLog(path) as log:
        log.record("read.accepted", read_id="a", hit=False)
    assert main(["audit", "verify", str(path), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_report_counts_what_the_outbox_writes(tmp_path) -> None:
    """The outbox audits a read's decisions inside its read.accepted record and PUBACKs in
    batches; the report must count one decision per (read, destination) and one delivery per
    acknowledged read all the same."""
    import time

    from helpers.soak import build_stack, destination_doc, make_read, policy_doc
    stack = build_stack(tmp_path / "unit")
    try:
        now = time.time()
        stack.rig.install(policy_doc(1, [
            destination_doc("city", "mqtts://127.0.0.1:1", "t/city", pin="0" * 64),
            destination_doc("feds", "mqtts://127.0.0.1:1", "t/feds", pin="0" * 64, dest_class="federal_immigration"),
            destination_doc("state", "mqtts://127.0.0.1:1", "t/state", pin="0" * 64, mode="hotlist_hits")],
            now, prohibited_classes=["federal_immigration"]))
        reads = [make_read(i, now, hit=i % 4 == 0) for i in range(40)]
        for start in range(0, 40, 7):
            stack.outbox.accept(reads[start:start + 7], now)
        queued = stack.outbox.next_batch("city", 0, 100)
        stack.outbox.mark_sent(queued[:25], now)
        stack.outbox.mark_sent(queued[25:30], now)
        stack.outbox.settle_sent(force=True)
    finally:
        stack.outbox.close()
        stack.audit.close()
    report = build_report(tmp_path / "unit" / "audit.log")
    assert report["integrity"]["ok"]
    assert report["reads"] == {"seen": 40, "hits": 10}
    assert report["decisions"] == {"total": 120, "allowed": 50, "denied": 70, "rechecks": 0}
    assert report["shares"]["by_destination"] == {"city": 40, "state": 10}
    assert report["denials"]["by_prohibition"] == {"prohibition:class:federal_immigration": 40}
    assert report["denials"]["by_rule"]["rule:state-rule:not-a-hit"] == 30
    assert report["deliveries"]["sent"] == {"city": 30}


def test_sanity_the_synthetic_log_has_changes_and_reinstalls(tmp_path) -> None:
    path = tmp_path / "audit.jsonl"
    totals = Counter()
    for seed in (1, 2, 3):
        synth_log(path, seed)
        report = build_report(path)
        totals["changes"] += len(report["policy_changes"])
        totals["reinstalls"] += report["policy_reinstalls"]
        path.unlink()
        path.with_name(path.name + ".head").unlink(missing_ok=True)
    assert totals["changes"] > 3 and totals["reinstalls"] > 3


def test_restarts_reinstalling_a_policy_are_not_policy_changes(tmp_path, capsys) -> None:
    """Regression (issue 14, item 7): each restart's re-install of the same policy counted as a
    "policy change": a log with one policy version reported 5 changes."""
    path = tmp_path / "audit.jsonl"
    clock = iter(T0 + 60 * i for i in range(100))
    with AuditLog(path, clock=lambda: next(clock)) as log:
        for source in ("serial", "persisted", "persisted", "persisted", "persisted"):
            log.record("policy.installed", version=3, digest="d3", source=source)
        log.record("policy.refused", reason="rollback", source="mqtt")
        log.record("policy.installed", version=4, digest="d4", source="serial")
        log.record("policy.installed", version=4, digest="d4", source="persisted")
    report = build_report(path)
    assert [(c["previous_version"], c["version"]) for c in report["policy_changes"]] == [(None, 3), (3, 4)]
    assert report["policy_reinstalls"] == 5
    assert [e["reason"] for e in report["policy_refusals_and_expiries"]] == ["rollback"]
    later = build_report(path, since=T0 + 60 * 2)   # v3 was active before the window: no change
    assert [c["version"] for c in later["policy_changes"]] == [4]
    md = render(report, "md")
    assert "| policy changes (new version or digest) | 2 |" in md
    assert "| policy re-installs (same version) | 5 |" in md


def test_integrity_line_claims_only_what_was_verified(tmp_path, capsys) -> None:
    """Regression (issue 14, item 7): the report printed "Log integrity: verified" although
    `audit report` took no unit key and so checked no signature."""
    from agent.policy.signing import key_id, load_private_key, load_public_key

    keys = Path(__file__).resolve().parents[1] / "firmware_config" / "policies" / "test-keys"
    path = tmp_path / "audit.jsonl"
    with AuditLog(path, load_private_key(keys / "unit-TEST-ONLY.key"), checkpoint_every=5) as log:
        for i in range(12):
            log.record("read.accepted", read_id=str(i), hit=False)
    unit_pub = keys / "unit-TEST-ONLY.pub"
    kid = key_id(load_public_key(unit_pub))
    assert main(["audit", "report", str(path)]) == 0   # --since is optional: the whole log
    out = capsys.readouterr().out
    assert "Log integrity: hash chain verified over the whole file (" in out
    assert "no unit key given, so no signature was checked" in out and kid not in out
    assert main(["audit", "report", str(path), "--unit-key", str(unit_pub)]) == 0
    out = capsys.readouterr().out
    assert f"plus its head signed by unit key id {kid} (signatures verified up to seq" in out
    assert main(["audit", "report", str(path), "--unit-key", str(keys / "vendor-TEST-ONLY.pub"),
                 "--format", "json"]) == 2      # the report is printed; the status says it failed
    integrity = json.loads(capsys.readouterr().out)["integrity"]
    assert integrity["ok"] is False and "does not verify with unit key" in integrity["problem"]
    assert main(["audit", "report", str(path), "--unit-key", str(tmp_path / "none.pub")]) == 2


class _HtmlSections:
    """Headings and table rows of the HTML, in order (the SVG chart's text is skipped)."""

    def __init__(self, text: str) -> None:
        from html.parser import HTMLParser

        self.items: list[tuple] = []
        outer = self

        class Parser(HTMLParser):
            def __init__(self) -> None:
                super().__init__(convert_charrefs=True)
                self.tag: str | None = None
                self.row: list[str] | None = None
                self.text = ""
                self.in_svg = False

            def handle_starttag(self, tag, attrs):
                self.in_svg = self.in_svg or tag == "svg"
                if tag in ("h1", "h2", "h3", "td", "th", "p"):
                    self.tag, self.text = tag, ""
                elif tag == "tr":
                    self.row = []

            def handle_endtag(self, tag):
                if tag == "svg":
                    self.in_svg = False
                elif tag in ("h1", "h2", "h3"):
                    outer.items.append(("heading", int(tag[1]), self.text))
                elif tag == "p" and not self.in_svg:
                    outer.items.append(("text", self.text))
                elif tag in ("td", "th") and self.row is not None:
                    self.row.append(self.text)
                elif tag == "tr" and self.row is not None:
                    outer.items.append(("row", tuple(self.row)))
                    self.row = None
                self.tag = None

            def handle_data(self, data):
                if self.tag and not self.in_svg:
                    self.text += data

        Parser().feed(text)


def _md_sections(text: str) -> list[tuple]:
    import re

    unescape = lambda s: re.sub(r"\\(.)", r"\1", s)
    items: list[tuple] = []
    for line in text.splitlines():
        if line.startswith("#"):
            level = len(line) - len(line.lstrip("#"))
            items.append(("heading", level, unescape(line[level + 1:])))
        elif line.startswith("|---"):
            continue  # the header separator
        elif line.startswith("|"):
            cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
            items.append(("row", tuple(unescape(c.strip()) for c in cells)))
        elif line.strip():
            items.append(("text", unescape(line)))
    return items


@pytest.mark.parametrize("seed", [4, 5])
def test_markdown_and_html_have_the_same_sections_and_tables(tmp_path, seed) -> None:
    """Regression (issue 14, item 7): the HTML lacked the "denials by destination" table and
    the hotlists section that the Markdown had; both now render one document model."""
    path = tmp_path / "audit.jsonl"
    synth_log(path, seed, n_reads=120)
    with AuditLog(path) as log:
        log.record("hotlist.installed", list_id="ncic|stolen", version=7, purpose="stolen_vehicle")
        log.record("decision", read_id="x", destination="a|b <c>", allowed=False, rule_id="r*1",
                   reason="", purposes=[], hit=False, dest_class="other")
    report = build_report(path)
    md, html = _md_sections(render(report, "md")), _HtmlSections(render(report, "html")).items
    assert md == html
    headings = [item[1:] for item in md if item[0] == "heading"]
    assert (2, "Denials") in headings and (2, "Hotlists") in headings
    denials = headings.index((2, "Denials"))
    assert (3, "By destination") in headings[denials:]
    assert ("row", ("a|b <c>", "1")) in md
    assert ("row", (report["hotlists"][0]["time"], "hotlist.installed", "ncic|stolen", "7", "")) in md
