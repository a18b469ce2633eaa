"""The shipped OCR model: present, matching its manifest, and refused loudly when damaged."""
from __future__ import annotations

import json

import numpy as np
import pytest

from agent.vision.models import ModelError, file_sha256, load_manifest, open_session
from agent.vision.ocr import PlateReader
from agent.vision.plate_formats import CHARSET
from helpers.paths import MODELS


def test_manifest_entry_describes_the_model():
    entry = load_manifest(MODELS)["models"]["plate_ocr"]
    for key in ("version", "sha256", "input", "charset", "trained_on", "synthetic_samples",
                "synthetic_seed", "accuracy", "size_bytes"):
        assert key in entry, key
    assert entry["charset"] == CHARSET
    assert entry["input"]["shape"] == [1, 1, 48, 144]
    assert any("CC BY 4.0" in line for line in entry["trained_on"])


def test_shipped_model_matches_manifest_and_is_small():
    entry = load_manifest(MODELS)["models"]["plate_ocr"]
    path = MODELS / entry["file"]
    assert path.name == "plate_ocr.onnx"
    assert file_sha256(path) == entry["sha256"]
    assert path.stat().st_size <= 5 * 1024 * 1024
    for key in ("fp32", "int8"):
        if f"file_{key}" in entry:
            assert file_sha256(MODELS / entry[f"file_{key}"]) == entry[f"sha256_{key}"]


def test_model_loads_and_reads(ocr_models):
    reader = PlateReader.from_models(ocr_models, threads=1)
    crop = np.full((80, 160, 3), 200, np.uint8)
    read = reader.read(crop)
    assert isinstance(read.text, str)
    assert 0.0 <= read.confidence <= 1.0
    assert len(read.candidates) <= 5
    assert len(read.char_confidences) == len(read.text)


def test_truncated_model_names_the_file(ocr_models):
    path = ocr_models / "plate_ocr.onnx"
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ModelError) as err:
        open_session(ocr_models, "plate_ocr")
    assert str(path) in str(err.value)
    assert "sha256" in str(err.value)


def test_corrupt_model_with_matching_hash_names_the_file(ocr_models):
    """A file that hashes right but is not an ONNX model (bad manifest) must not load."""
    path = ocr_models / "plate_ocr.onnx"
    path.write_bytes(b"not an onnx model at all")
    manifest = json.loads((ocr_models / "manifest.json").read_text())
    manifest["models"]["plate_ocr"]["sha256"] = file_sha256(path)
    (ocr_models / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ModelError) as err:
        PlateReader.from_models(ocr_models)
    assert str(path) in str(err.value)
    assert "cannot be loaded" in str(err.value)


def test_missing_model_and_manifest(ocr_models):
    (ocr_models / "plate_ocr.onnx").unlink()
    with pytest.raises(ModelError, match="plate_ocr.onnx.*missing"):
        open_session(ocr_models, "plate_ocr")
    (ocr_models / "manifest.json").unlink()
    with pytest.raises(ModelError, match="manifest.*missing"):
        open_session(ocr_models, "plate_ocr")


def test_unknown_model_name(ocr_models):
    with pytest.raises(ModelError, match="not in .*manifest.json"):
        open_session(ocr_models, "no_such_model")
