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
- policy changes: every ``policy.installed`` / ``policy.refused`` / ``policy.expired`` record.
"""
from __future__ import annotations

import html
import json
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

from agent import events
from agent.audit.log import verify_log
from agent.audit.records import expand

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
                 *, check_integrity: bool = True) -> dict:
    reads: set[str] = set()
    hits: set[str] = set()
    decisions = allowed = denied = 0
    by_dest, by_class, by_purpose = Counter(), Counter(), Counter()
    denied_by_rule, denied_by_dest, denied_by_prohibition = Counter(), Counter(), Counter()
    sent, refused, purged, evicted = Counter(), Counter(), Counter(), Counter()
    deleted = deletion_events = config_changes = rechecks = 0
    policy_changes: list[dict] = []
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
            if (since is not None and t < since) or (until is not None and t >= until):
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
                elif event in (events.POLICY_INSTALLED, events.POLICY_REFUSED, events.POLICY_EXPIRED):
                    policy_changes.append({"time": _iso(t), "event": event, "version": f.get("version"),
                                           "digest": f.get("digest"), "reason": f.get("reason"),
                                           "source": f.get("source")})
                elif event in (events.HOTLIST_INSTALLED, events.HOTLIST_REFUSED, events.HOTLIST_STALE):
                    hotlists.append({"time": _iso(t), "event": event, "list_id": f.get("list_id"),
                                     "version": f.get("version"), "reason": f.get("reason")})
    report = {
        "schema": "plategate.transparency/1",
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
        "hotlists": hotlists,
        "config_changes": config_changes,
    }
    if check_integrity:
        result = verify_log(path)
        report["integrity"] = {"ok": result.ok, "records_checked": result.records, "problem": result.problem}
    return report


# --- rendering ---------------------------------------------------------------------------------

def _md_table(title: str, counts: dict[str, int], label: str) -> list[str]:
    lines = [f"### {title}", ""]
    if not counts:
        return lines + ["None.", ""]
    lines += [f"| {label} | count |", "|---|---:|"]
    lines += [f"| {k} | {v} |" for k, v in counts.items()]
    return lines + [""]


def render_md(report: dict) -> str:
    p = report["period"]
    out = ["# PlateGate transparency report", "",
           f"Period: {p['since'] or 'start of log'} to {p['until'] or 'end of log'} "
           f"(records {p['first_record']} .. {p['last_record']}); computed from `{report['log']}` alone.", ""]
    integ = report.get("integrity")
    if integ is not None:
        out += [f"Log integrity: {'verified' if integ['ok'] else 'FAILED: ' + integ['problem']}", ""]
    r, d = report["reads"], report["decisions"]
    out += ["## Summary", "", "| measure | count |", "|---|---:|",
            f"| reads seen | {r['seen']} |", f"| hotlist hits | {r['hits']} |",
            f"| sharing decisions | {d['total']} |", f"| shares allowed | {d['allowed']} |",
            f"| shares denied | {d['denied']} |", f"| re-checks after policy changes | {d['rechecks']} |",
            f"| reads deleted by retention | {report['deletions']['reads_deleted']} |",
            f"| policy changes | {len(report['policy_changes'])} |",
            f"| config changes | {report['config_changes']} |", "", "## Shares", ""]
    out += _md_table("By destination", report["shares"]["by_destination"], "destination")
    out += _md_table("By destination class", report["shares"]["by_class"], "class")
    out += _md_table("By purpose", report["shares"]["by_purpose"], "purpose")
    out += ["## Denials", ""]
    out += _md_table("By prohibition", report["denials"]["by_prohibition"], "prohibition")
    out += _md_table("By rule", report["denials"]["by_rule"], "rule")
    out += _md_table("By destination", report["denials"]["by_destination"], "destination")
    out += ["## Deliveries", ""]
    for key in ("sent", "refused", "purged", "evicted"):
        out += _md_table(key.capitalize(), report["deliveries"][key], "destination")
    out += ["## Policy changes", ""]
    if report["policy_changes"]:
        out += ["| time | event | version | reason | source |", "|---|---|---:|---|---|"]
        out += [f"| {c['time']} | {c['event']} | {c['version'] if c['version'] is not None else ''} | "
                f"{c['reason'] or ''} | {c['source'] or ''} |" for c in report["policy_changes"]]
    else:
        out += ["None."]
    out += ["", "## Hotlists", ""]
    if report["hotlists"]:
        out += ["| time | event | list | version | reason |", "|---|---|---|---:|---|"]
        out += [f"| {h['time']} | {h['event']} | {h['list_id'] or ''} | "
                f"{h['version'] if h['version'] is not None else ''} | {h['reason'] or ''} |"
                for h in report["hotlists"]]
    else:
        out += ["None."]
    return "\n".join(out) + "\n"


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


def _html_table(title: str, counts: dict[str, int], label: str) -> str:
    if not counts:
        return f"<h3>{html.escape(title)}</h3><p>None.</p>"
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td class=n>{v}</td></tr>" for k, v in counts.items())
    return (f"<h3>{html.escape(title)}</h3><table><tr><th>{html.escape(label)}</th><th>count</th></tr>"
            f"{rows}</table>")


def render_html(report: dict) -> str:
    p, r, d = report["period"], report["reads"], report["decisions"]
    integ = report.get("integrity")
    summary = {"reads seen": r["seen"], "hotlist hits": r["hits"], "sharing decisions": d["total"],
               "shares allowed": d["allowed"], "shares denied": d["denied"],
               "re-checks after policy changes": d["rechecks"],
               "reads deleted by retention": report["deletions"]["reads_deleted"],
               "policy changes": len(report["policy_changes"]), "config changes": report["config_changes"]}
    changes = "".join(
        f"<tr><td>{html.escape(str(c['time']))}</td><td>{html.escape(c['event'])}</td>"
        f"<td>{html.escape(str(c['version'] if c['version'] is not None else ''))}</td>"
        f"<td>{html.escape(str(c['reason'] or ''))}</td><td>{html.escape(str(c['source'] or ''))}</td></tr>"
        for c in report["policy_changes"])
    body = [
        "<!doctype html><html lang=en><head><meta charset=utf-8><title>PlateGate transparency report</title>",
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto}table{border-collapse:collapse;"
        "margin-bottom:1em}td,th{border:1px solid #ccc;padding:2px 8px}td.n{text-align:right}</style></head><body>",
        "<h1>PlateGate transparency report</h1>",
        f"<p>Period: {html.escape(str(p['since'] or 'start of log'))} to {html.escape(str(p['until'] or 'end of log'))}"
        f"; computed from <code>{html.escape(report['log'])}</code> alone.</p>",
    ]
    if integ is not None:
        body.append(f"<p>Log integrity: <strong>{'verified' if integ['ok'] else 'FAILED'}</strong> "
                    f"{html.escape(integ['problem'])}</p>")
    body += [_html_table("Summary", summary, "measure"), "<h2>Shares and denials per destination</h2>",
             render_svg(report), "<h2>Shares</h2>",
             _html_table("By destination", report["shares"]["by_destination"], "destination"),
             _html_table("By destination class", report["shares"]["by_class"], "class"),
             _html_table("By purpose", report["shares"]["by_purpose"], "purpose"), "<h2>Denials</h2>",
             _html_table("By prohibition", report["denials"]["by_prohibition"], "prohibition"),
             _html_table("By rule", report["denials"]["by_rule"], "rule"), "<h2>Deliveries</h2>"]
    body += [_html_table(k.capitalize(), report["deliveries"][k], "destination")
             for k in ("sent", "refused", "purged", "evicted")]
    body.append("<h2>Policy changes</h2>")
    body.append(f"<table><tr><th>time</th><th>event</th><th>version</th><th>reason</th><th>source</th></tr>{changes}"
                f"</table>" if changes else "<p>None.</p>")
    body.append("</body></html>")
    return "\n".join(body) + "\n"


def render(report: dict, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(report, indent=2) + "\n"
    if fmt == "html":
        return render_html(report)
    return render_md(report)
