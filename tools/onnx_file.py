"""Opening an ONNX file for the tools, with one clear error (no torch needed).

Why its own module: the tools that only rewrite weights (tools/soup_ocr.py) must run where
torch is not installed (the CI machine), while tools/onnx_init.py, which shares this, needs it.
"""
from __future__ import annotations

from pathlib import Path


def load_onnx(path: Path):
    """``onnx.load(path)``, or ValueError naming the file where it is missing or not ONNX."""
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as exc:  # protobuf's DecodeError, OSError: one message either way
        raise ValueError(f"{path}: not a readable ONNX model ({exc})") from None
