"""`plategate receive export`: stored reads as CSV or JSON, streamed (any size).

JSON keeps absent fields absent (one object per read, the read's fields under "read" as
the message carried them, images base64). CSV is flat, one column per field; a field the
destination was not sent is an empty cell (CSV has no NULL), and images are left out
(export JSON for them). Parquet is not offered: the well-kept writer (pyarrow) is a large
native dependency (a wheel of tens of MB) for a format either of these converts to.
"""
from __future__ import annotations

import csv
import json
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import TextIO

from agent.receiver.store import row_to_read

FORMATS = ("csv", "json")
CSV_COLUMNS = ("read_id", "destination", "unit_id", "key_id", "purpose", "policy_version",
               "sealed", "received_at", "timestamp", "plate", "plate_hmac", "confidence",
               "camera_id", "latitude", "longitude", "precision_m", "hits")


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat(timespec="milliseconds") \
        .replace("+00:00", "Z")


def export_record(row: dict) -> dict:
    """One stored read as the JSON export writes it."""
    return {"read_id": row["read_id"], "destination": row["destination"],
            "unit_id": row["unit_id"], "key_id": row["key_id"], "purpose": row["purpose"],
            "policy_version": row["policy_version"], "sealed": bool(row["sealed"]),
            "received_at": iso(row["received_at"]), "read": row_to_read(row)}


def write_json(rows: Iterable[dict], out: TextIO) -> int:
    count = 0
    out.write("[")
    for row in rows:
        out.write(",\n" if count else "\n")
        out.write(json.dumps(export_record(row), separators=(",", ":"), sort_keys=True))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


def write_csv(rows: Iterable[dict], out: TextIO) -> int:
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    count = 0
    for row in rows:
        flat = {**row, "timestamp": row["seen_at"], "sealed": int(bool(row["sealed"])),
                "received_at": iso(row["received_at"])}
        writer.writerow(["" if flat.get(c) is None else flat[c] for c in CSV_COLUMNS])
        count += 1
    return count


def write_export(rows: Iterable[dict], fmt: str, out: TextIO) -> int:
    """Write `rows` in `fmt` (csv or json); returns how many were written."""
    if fmt == "json":
        return write_json(rows, out)
    if fmt == "csv":
        return write_csv(rows, out)
    raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
