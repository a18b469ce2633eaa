"""The transparency report: what the unit saw, shared, refused and deleted, from the log alone.

Everything here is recomputed from the audit log's records (no other state), so an outside
auditor holding only the log file can reproduce every number. Counting rules (docs/audit.md):

Batched records count as what they stand for (``agent.audit.records.expand``): a
``read.accepted`` with a ``decisions`` list counts as that read plus one ``decision`` per
entry, a ``delivery.sent`` with ``read_ids`` as one delivery per id.

- reads seen: distinct read_id over ``read.accepted`` and ``decision`` records;
  hits: those of them recorded with ``hit`` true;
- decisions: ``decision`` records, except re-checks (``recheck`` true: a queued delivery
  re-decided after a policy change), which are counted apart;
- shares: ``decision`` records with ``allowed`` true, by destination, by ``dest_class`` and
  by each hit purpose in ``purposes`` (an allowed non-hit share counts under "(all reads)");
- denials: ``decision`` records with ``allowed`` false, by ``rule_id`` (the prohibitions are
  the ``prohibition:*`` ids) and by destination;
- deliveries: ``delivery.sent`` / ``delivery.refused`` / ``delivery.purged`` / ``outbox.evicted``;
- deletions: the sum of ``count`` over ``retention.deleted``;
- policy changes: ``policy.installed`` records whose version or digest differs from the policy
  active before them (the log is read from its start for that, whatever ``since`` says); an
  install of the version already active (every restart re-installs it) is a re-install,
  counted apart; ``policy.refused`` / ``policy.expired`` are listed apart too.

Integrity says exactly what was checked: the hash chain of the whole file, and, only when
the unit's public key is given, the signature of its sealed head (and checkpoints) by that
key id. Markdown and HTML are two renderings of one document model (``document()``), so they
carry the same sections and tables.
"""
from __future__ import annotations

import html
import json
import re
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from agent import events
from agent.audit.log import VerifyResult, verify_log
from agent.audit.records import expand
from agent.policy.signing import key_id

ALL_READS = "(all reads)"


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def parse_date(value: str) -> float:
    """'2026-11-01' (midnight UTC) or a full ISO 8601 time (no zone = UTC) -> unix seconds."""
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a date (YYYY-MM-DD) or ISO 8601 time") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.timestamp()


def _sorted(counter: Counter) -> dict[str, int]:
    return {k: counter[k] for k in sorted(counter, key=lambda k: (-counter[k], str(k)))}


def build_report(path: Path, since: float | None = None, until: float | None = None,
                 *, check_integrity: bool = True, unit_key: Ed25519PublicKey | None = None) -> dict:
    """The report's numbers for records with ``since <= time < until`` (None: open-ended).

    ``unit_key`` (the unit's public key) makes the integrity check verify the signatures
    of the sealed head and checkpoints too; without it only the hash chain is checked.
    """
    reads: set[str] = set()
    hits: set[str] = set()
    decisions = allowed = denied = 0
    by_dest, by_class, by_purpose = Counter(), Counter(), Counter()
    denied_by_rule, denied_by_dest, denied_by_prohibition = Counter(), Counter(), Counter()
    sent, refused, purged, evicted = Counter(), Counter(), Counter(), Counter()
    deleted = deletion_events = config_changes = rechecks = 0
    policy_changes: list[dict] = []
    policy_other: list[dict] = []
    reinstalls = 0
    active: tuple | None = None  # (version, digest) of the policy installed last, from the log's start
    hotlists: list[dict] = []
    records = 0
    first_time = last_time = None
    with open(path, "rb") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
                t, event, f = float(rec["time"]), rec["event"], rec["fields"]
            except (ValueError, KeyError, TypeError):
                continue  # integrity problems are reported by verify, not guessed around here
            in_window = (since is None or t >= since) and (until is None or t < until)
            if event == events.POLICY_INSTALLED and isinstance(f, dict):
                installed = (f.get("version"), f.get("digest"))
                if in_window and installed == active:
                    reinstalls += 1  # a restart or reload installing the active policy again
                elif in_window:
                    policy_changes.append({"time": _iso(t), "version": f.get("version"),
                                           "previous_version": active[0] if active else None,
                                           "digest": f.get("digest"), "source": f.get("source")})
                active = installed
            if not in_window:
                continue
            records += 1
            first_time = t if first_time is None else first_time
            last_time = t
            for event, f in expand(event, f):
                if event in (events.READ_ACCEPTED, events.DECISION):
                    rid = str(f.get("read_id"))
                    reads.add(rid)
                    if f.get("hit"):
                        hits.add(rid)
                if event == events.DECISION and f.get("recheck"):
                    rechecks += 1  # a queued delivery re-decided after a policy change, not a new share
                elif event == events.DECISION:
                    decisions += 1
                    dest = str(f.get("destination") or "(no destination: no policy)")
                    if f.get("allowed"):
                        allowed += 1
                        by_dest[dest] += 1
                        by_class[str(f.get("dest_class"))] += 1
                        for purpose in (f.get("purposes") or [ALL_READS]):
                            by_purpose[str(purpose)] += 1
                    else:
                        denied += 1
                        rule = str(f.get("rule_id"))
                        denied_by_rule[rule] += 1
                        denied_by_dest[dest] += 1
                        if rule.startswith("prohibition:"):
                            denied_by_prohibition[rule] += 1
                elif event == events.DELIVERY_SENT:
                    sent[str(f.get("destination"))] += 1
                elif event == events.DELIVERY_REFUSED:
                    refused[str(f.get("destination"))] += 1
                elif event == events.DELIVERY_PURGED:
                    purged[str(f.get("destination"))] += 1
                elif event == events.OUTBOX_EVICTED:
                    evicted[str(f.get("destination"))] += 1
                elif event == events.RETENTION_DELETED:
                    deletion_events += 1
                    deleted += int(f.get("count", 0) or 0)
                elif event == events.CONFIG_CHANGED:
                    config_changes += 1
                elif event in (events.POLICY_REFUSED, events.POLICY_EXPIRED):
                    policy_other.append({"time": _iso(t), "event": event, "version": f.get("version"),
                                         "reason": f.get("reason"), "source": f.get("source")})
                elif event in (events.HOTLIST_INSTALLED, events.HOTLIST_REFUSED, events.HOTLIST_STALE):
                    hotlists.append({"time": _iso(t), "event": event, "list_id": f.get("list_id"),
                                     "version": f.get("version"), "reason": f.get("reason")})
    report = {
        "schema": "plategate.transparency/2",  # /2: policy_changes are changes only; integrity says what was verified
        "log": str(path),
        "period": {"since": _iso(since), "until": _iso(until),
                   "first_record": _iso(first_time), "last_record": _iso(last_time)},
        "records": records,
        "reads": {"seen": len(reads), "hits": len(hits)},
        "decisions": {"total": decisions, "allowed": allowed, "denied": denied, "rechecks": rechecks},
        "shares": {"by_destination": _sorted(by_dest), "by_class": _sorted(by_class),
                   "by_purpose": _sorted(by_purpose)},
        "denials": {"by_prohibition": _sorted(denied_by_prohibition), "by_rule": _sorted(denied_by_rule),
                    "by_destination": _sorted(denied_by_dest)},
        "deliveries": {"sent": _sorted(sent), "refused": _sorted(refused), "purged": _sorted(purged),
                       "evicted": _sorted(evicted)},
        "deletions": {"reads_deleted": deleted, "deletion_runs": deletion_events},
        "policy_changes": policy_changes,
        "policy_reinstalls": reinstalls,
        "policy_refusals_and_expiries": policy_other,
        "hotlists": hotlists,
        "config_changes": config_changes,
    }
    if check_integrity:
        report["integrity"] = _integrity(verify_log(path, unit_key), unit_key)
    return report


def _integrity(result: VerifyResult, unit_key: Ed25519PublicKey | None) -> dict:
    """What was verified, in the terms the report prints (see ``integrity_line``)."""
    return {"ok": result.ok, "records_checked": result.records, "problem": result.problem,
            "verified": ("chain+signed_head" if unit_key is not None else "chain") if result.ok else None,
            "unit_key_id": key_id(unit_key) if unit_key is not None else None,
            "signed_up_to_seq": result.last_verified_seq if unit_key is not None else None}


def integrity_line(integ: dict | None) -> str:
    """One sentence that claims exactly what was checked, no more (DESIGN invariant 8)."""
    if integ is None:
        return "Log integrity: not checked."
    if not integ["ok"]:
        return f"Log integrity: FAILED: {integ['problem']}"
    chain = f"Log integrity: hash chain verified over the whole file ({integ['records_checked']} records)"
    if integ["verified"] != "chain+signed_head":
        return (f"{chain}; no unit key given, so no signature was checked and a log rewritten as "
                "a whole (chain and head) would not be detected.")
    signed = integ["signed_up_to_seq"] or 0
    tail = integ["records_checked"] - signed
    unsealed = f"; the {tail} record(s) after it are chained but not yet signed" if tail > 0 else ""
    return (f"{chain}, plus its head signed by unit key id {integ['unit_key_id']} (signatures verified "
            f"up to seq {signed}{unsealed}).")


# --- one document model, two renderings ----------------------------------------------------------

@dataclass(frozen=True)
class Table:
    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Section:
    """A heading, its paragraphs and at most one table (empty table: "None.")."""

    title: str
    level: int                       # 1 title, 2 part, 3 sub-part
    paragraphs: tuple[str, ...] = ()
    table: Table | None = None
    chart: bool = False              # HTML draws the per-destination bar chart here


def _cell(value: object) -> str:
    return "" if value is None else str(value)


def _counts(title: str, counts: dict[str, int], label: str) -> Section:
    return Section(title, 3, table=Table((label, "count"),
                                         tuple((str(k), str(v)) for k, v in counts.items())))


def _listing(title: str, items: list[dict], columns: tuple[tuple[str, str], ...],
             paragraphs: tuple[str, ...] = ()) -> Section:
    rows = tuple(tuple(_cell(item.get(key)) for key, _ in columns) for item in items)
    return Section(title, 2, paragraphs, Table(tuple(label for _, label in columns), rows))


def document(report: dict) -> list[Section]:
    """The report as sections; render_md and render_html only change the markup."""
    p, r, d = report["period"], report["reads"], report["decisions"]
    summary = {"reads seen": r["seen"], "hotlist hits": r["hits"], "sharing decisions": d["total"],
               "shares allowed": d["allowed"], "shares denied": d["denied"],
               "re-checks after policy changes": d["rechecks"],
               "reads deleted by retention": report["deletions"]["reads_deleted"],
               "policy changes (new version or digest)": len(report["policy_changes"]),
               "policy re-installs (same version)": report["policy_reinstalls"],
               "config changes": report["config_changes"]}
    period = (f"Period: {p['since'] or 'start of log'} to {p['until'] or 'end of log'} (records "
              f"{p['first_record'] or '-'} .. {p['last_record'] or '-'}); computed from {report['log']} alone.")
    sections = [
        Section("PlateGate transparency report", 1, (period, integrity_line(report.get("integrity")))),
        Section("Summary", 2, table=Table(("measure", "count"), tuple((k, str(v)) for k, v in summary.items()))),
        Section("Shares", 2, ("Allowed and denied shares per destination.",), chart=True),
        _counts("By destination", report["shares"]["by_destination"], "destination"),
        _counts("By destination class", report["shares"]["by_class"], "class"),
        _counts("By purpose", report["shares"]["by_purpose"], "purpose"),
        Section("Denials", 2),
        _counts("By prohibition", report["denials"]["by_prohibition"], "prohibition"),
        _counts("By rule", report["denials"]["by_rule"], "rule"),
        _counts("By destination", report["denials"]["by_destination"], "destination"),
        Section("Deliveries", 2),
    ]
    sections += [_counts(key.capitalize(), report["deliveries"][key], "destination")
                 for key in ("sent", "refused", "purged", "evicted")]
    sections += [
        _listing("Policy changes", report["policy_changes"],
                 (("time", "time"), ("previous_version", "from version"), ("version", "to version"),
                  ("digest", "digest"), ("source", "source")),
                 (f"A change is an install of a new version or digest; {report['policy_reinstalls']} "
                  "re-install(s) of the version already active (restarts, reloads) are not changes.",)),
        _listing("Policy refusals and expiries", report["policy_refusals_and_expiries"],
                 (("time", "time"), ("event", "event"), ("version", "version"), ("reason", "reason"),
                  ("source", "source"))),
        _listing("Hotlists", report["hotlists"],
                 (("time", "time"), ("event", "event"), ("list_id", "list"), ("version", "version"),
                  ("reason", "reason"))),
    ]
    return sections


_MD_SPECIAL = re.compile(r"([\\|`*\[\]<>])")


def _md(text: str) -> str:
    """Escape what Markdown would read as markup (a destination id is the department's text)."""
    return _MD_SPECIAL.sub(r"\\\1", text)


def render_md(report: dict) -> str:
    out: list[str] = []
    for section in document(report):
        out += ["#" * section.level + " " + _md(section.title), ""]
        for paragraph in section.paragraphs:
            out += [_md(paragraph), ""]
        table = section.table
        if table is not None and not table.rows:
            out += ["None.", ""]
        elif table is not None:
            out.append("| " + " | ".join(_md(h) for h in table.headers) + " |")
            out.append("|" + "|".join("---" for _ in table.headers) + "|")
            out += ["| " + " | ".join(_md(c) for c in row) + " |" for row in table.rows]
            out.append("")
    return "\n".join(out)


def render_svg(report: dict) -> str:
    """Horizontal bars: shares allowed and denied per destination (inline SVG, no scripts)."""
    allowed = report["shares"]["by_destination"]
    denied = report["denials"]["by_destination"]
    names = sorted(set(allowed) | set(denied))
    bar_h, gap, label_w, chart_w = 14, 10, 170, 360
    height = max(1, len(names)) * (2 * bar_h + gap) + 40
    top = max([1] + list(allowed.values()) + list(denied.values()))
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + chart_w + 80}" height="{height}" '
             f'role="img" aria-label="shares allowed and denied per destination">',
             '<style>text{font:12px sans-serif}</style>']
    y = 10
    for name in names:
        a, d = allowed.get(name, 0), denied.get(name, 0)
        wa, wd = chart_w * a / top, chart_w * d / top
        parts.append(f'<text x="{label_w - 6}" y="{y + bar_h + 4}" text-anchor="end">{html.escape(name)}</text>')
        parts.append(f'<rect x="{label_w}" y="{y}" width="{wa:.1f}" height="{bar_h}" fill="#2e7d32">'
                     f'<title>{html.escape(name)}: {a} allowed</title></rect>')
        parts.append(f'<text x="{label_w + wa + 4:.1f}" y="{y + bar_h - 3}">{a}</text>')
        parts.append(f'<rect x="{label_w}" y="{y + bar_h}" width="{wd:.1f}" height="{bar_h}" fill="#b71c1c">'
                     f'<title>{html.escape(name)}: {d} denied</title></rect>')
        parts.append(f'<text x="{label_w + wd + 4:.1f}" y="{y + 2 * bar_h - 3}">{d}</text>')
        y += 2 * bar_h + gap
    parts.append(f'<rect x="{label_w}" y="{y + 6}" width="10" height="10" fill="#2e7d32"/>'
                 f'<text x="{label_w + 14}" y="{y + 15}">allowed</text>'
                 f'<rect x="{label_w + 80}" y="{y + 6}" width="10" height="10" fill="#b71c1c"/>'
                 f'<text x="{label_w + 94}" y="{y + 15}">denied</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def render_html(report: dict) -> str:
    e = html.escape
    body = [
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>PlateGate transparency report</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse;"
        "margin-bottom:1em}td,th{border:1px solid #ccc;padding:2px 8px}</style></head><body>",
    ]
    for section in document(report):
        body.append(f"<h{section.level}>{e(section.title)}</h{section.level}>")
        body += [f"<p>{e(paragraph)}</p>" for paragraph in section.paragraphs]
        if section.chart:
            body.append(render_svg(report))
        table = section.table
        if table is not None and not table.rows:
            body.append("<p>None.</p>")
        elif table is not None:
            head = "".join(f"<th>{e(h)}</th>" for h in table.headers)
            rows = "".join("<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in table.rows)
            body.append(f"<table><tr>{head}</tr>{rows}</table>")
    body.append("</body></html>")
    return "\n".join(body) + "\n"


def render(report: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2) + "\n"
    if fmt == "html":
        return render_html(report)
    return render_md(report)
