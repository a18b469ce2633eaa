"""Loading ONNX models named in ``models/manifest.json``, refusing any file that is not the one
the manifest describes.

Why: a unit in the field must never run a model that was swapped, truncated by a failed update
or corrupted on flash. Each model's sha256 lives in the manifest next to its input shape, layout,
dtype and charset, so the file is checked before it is handed to onnxruntime, and the session is
warmed up once at load so the first camera frame is not slow.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from agent.config.files import missing_or_unreadable, readable_folder
from agent.config.loader import Problem
from agent.config.schema import DeviceConfig

log = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.json"


class ModelError(ValueError):
    """A model or the manifest is missing, does not match its hash, or cannot be loaded."""


def load_manifest(models_dir: Path) -> dict:
    """Read ``models_dir/manifest.json``: ``{"models": {name: entry, ...}}``.

    Raises ModelError naming the file when it is missing or not valid JSON.
    """
    path = Path(models_dir) / MANIFEST_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"model manifest {path} is missing") from None
    except OSError as exc:
        raise ModelError(f"model manifest {path} cannot be read: {exc}") from None
    try:
        manifest = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelError(f"model manifest {path} is not valid JSON: {exc}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("models"), dict):
        raise ModelError(f"model manifest {path} has no 'models' object")
    return manifest


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read in chunks (models can be several MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def model_entry(models_dir: Path, name: str) -> dict:
    """The manifest entry for ``name``, or ModelError saying which names exist."""
    manifest = load_manifest(models_dir)
    entry = manifest["models"].get(name)
    if not isinstance(entry, dict):
        known = ", ".join(sorted(manifest["models"])) or "none"
        raise ModelError(f"model {name!r} is not in {Path(models_dir) / MANIFEST_NAME} "
                         f"(models listed: {known})")
    return entry


def _dummy_input(meta: Any, multiple: int = 1) -> np.ndarray:
    """A zero tensor matching an ONNX input; a symbolic batch or channel dimension becomes 1
    and a symbolic spatial one ``multiple`` (the size multiple the model's manifest promises:
    the detector's decoder upsamples x2 by a constant, so its input must be a multiple of 32)."""
    shape = [d if isinstance(d, int) and d > 0 else (multiple if axis >= 2 else 1)
             for axis, d in enumerate(meta.shape)]
    dtype = {"tensor(float)": np.float32, "tensor(uint8)": np.uint8,
             "tensor(int64)": np.int64, "tensor(float16)": np.float16}.get(meta.type, np.float32)
    return np.zeros(shape, dtype=dtype)


def cpu_session(path: Path, threads: int = 1) -> Any:
    """An onnxruntime CPU session of one ONNX file: ``threads`` intra-op threads, one
    inter-op, warnings off. No manifest check: open_session adds that for the agent's models;
    tools use this for candidate and scratch files that have no manifest entry yet."""
    import onnxruntime as ort  # deferred: importing the module must not load native code

    options = ort.SessionOptions()
    options.intra_op_num_threads = max(1, int(threads))
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


def open_session(models_dir: Path, name: str, threads: int = 1,
                 file_key: str = "file") -> tuple[Any, dict]:
    """Open the ONNX model ``name`` from ``models_dir`` after checking it against the manifest.

    ``file_key`` picks which file of the entry to load (``"file"`` by default; an entry may
    also name e.g. ``"file_fp32"``). Returns ``(session, entry)``. Raises ModelError naming the
    file and what is wrong: missing, hash mismatch, or corrupt/unloadable.
    """
    models_dir = Path(models_dir)
    entry = model_entry(models_dir, name)
    file_name = entry.get(file_key)
    if not file_name:
        raise ModelError(f"model {name!r} in {models_dir / MANIFEST_NAME} has no {file_key!r}")
    path = models_dir / file_name
    if not path.is_file():
        raise ModelError(f"model file {path} (model {name!r}) is missing")
    sha_key = "sha256" if file_key == "file" else f"sha256_{file_key.removeprefix('file_')}"
    expected = entry.get(sha_key)
    if not expected:
        raise ModelError(f"model {name!r} in {models_dir / MANIFEST_NAME} has no {sha_key!r}")
    actual = file_sha256(path)
    if actual != expected:
        raise ModelError(f"model file {path} does not match its manifest: sha256 {actual}, "
                         f"manifest says {expected} (corrupt or replaced file)")
    try:
        session = cpu_session(path, threads)
        spec = entry.get("input")
        multiple = int(spec.get("multiple", 1)) if isinstance(spec, dict) else 1
        feeds = {meta.name: _dummy_input(meta, multiple) for meta in session.get_inputs()}
        session.run(None, feeds)
    except Exception as exc:  # onnxruntime raises several unrelated exception types
        raise ModelError(f"model file {path} (model {name!r}) cannot be loaded: {exc}") from None
    log.info("model loaded name=%s file=%s version=%s threads=%d",
             name, path, entry.get("version"), threads)
    return session, entry


def update_manifest_entry(models_dir: Path, name: str, entry: dict) -> Path:
    """Read-modify-write one entry of the manifest, keeping every other entry.

    Used by the export tools; writes atomically (temp file then rename).
    """
    path = Path(models_dir) / MANIFEST_NAME
    if path.exists():
        manifest = json.loads(path.read_text(encoding="utf-8"))
    else:
        manifest = {"models": {}}
    manifest.setdefault("models", {})[name] = entry
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def models_match_manifest(config: DeviceConfig) -> list[Problem]:
    """The file check of `config check` and `run` for the models (agent/runtime/preflight.py):
    the manifest is readable, lists the OCR model, and each model file the agent loads exists
    and has the sha256 the manifest gives (the agent refuses any other file at load). Reads
    files only: no onnxruntime session is opened."""
    key, models_dir = "recognizer.models_dir", Path(config.recognizer.models_path)
    problem = readable_folder(key, models_dir, "models folder")
    if problem:
        return [problem]
    try:
        manifest = load_manifest(models_dir)
    except ModelError as exc:
        return [Problem(key, str(exc))]
    problems = []
    if "plate_ocr" not in manifest["models"]:
        problems.append(Problem(key, f"{models_dir / MANIFEST_NAME} lists no 'plate_ocr' model"))
    for name, entry in sorted(manifest["models"].items()):
        if not isinstance(entry, dict) or not entry.get("file") or not entry.get("sha256"):
            problems.append(Problem(key, f"model {name!r} in {models_dir / MANIFEST_NAME} has no "
                                         "'file' and 'sha256'"))
            continue
        path = models_dir / str(entry["file"])
        missing = missing_or_unreadable(key, path, f"model file (model {name!r})")
        if missing:
            problems.append(missing)
        elif file_sha256(path) != entry["sha256"]:
            problems.append(Problem(key, f"model file {path} does not match its manifest (sha256 "
                                         "differs: corrupt or replaced file)"))
    return problems
