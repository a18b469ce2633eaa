"""Where the tests find the project's files."""
from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODELS = Path(os.environ.get("PLATEGATE_MODELS") or ROOT / "models")
