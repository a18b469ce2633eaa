"""Pick FORMAT_PRIOR (agent/vision/ocr.py) on the plate-text *val* split (a selection set).

    .venv/bin/python tools/tune_format_prior.py --models models

Prints top-1 on plate-text val (one-row plates, with each crop's region as the hint) for a few
prior values. Never run on the eval-* sets: the prior is a tuned threshold.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.vision import ocr  # noqa: E402
from agent.vision.ocr import PlateReader  # noqa: E402
from tools.val_data import DATASETS, plate_text_val  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Tune FORMAT_PRIOR on plate-text val.")
    p.add_argument("--models", type=Path, default=Path("models"), help="models folder")
    p.add_argument("--datasets", type=Path, default=DATASETS, help="shared datasets folder")
    args = p.parse_args(argv)
    reader = PlateReader.from_models(args.models)
    rows = [(reader.probabilities(c.image), c.text, c.hint)
            for c in plate_text_val(args.datasets)]
    us = [r for r in rows if (r[2] or "").startswith("US")]
    out = {}
    for prior in (1.0, 2.0, 4.0, 8.0, 16.0, 32.0):
        ocr.FORMAT_PRIOR = prior
        hits = sum(ocr.resolve(pr, hint).text == t for pr, t, hint in rows)
        hits_nohint = sum(ocr.resolve(pr, None).text == t for pr, t, _ in rows)
        hits_us = sum(ocr.resolve(pr, hint).text == t for pr, t, hint in us)
        out[prior] = {"with_region": round(hits / len(rows), 4), "right": hits,
                      "no_region": round(hits_nohint / len(rows), 4),
                      "us_right": hits_us}
    print(json.dumps({"crops": len(rows), "us_crops": len(us), "top1_by_prior": out},
                     indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
