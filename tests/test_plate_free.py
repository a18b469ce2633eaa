"""No false read on plate-free frames at the agent's default confidence cuts (issue 6 acceptance).

The frames are 300 crops of the TRAINING sets' val-split scenes that avoid every labelled
plate (tools/bench_detect.py: plate_free_frames); the recognizer is the real one from models/.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from agent.config.schema import RecognizerConfig
from agent.vision.recognizer import Recognizer, is_confident
from tools.bench_detect import plate_free_frames
from tools.val_data import DATASETS  # ../shared/datasets, or $PLATEGATE_DATASETS

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.skipif(not (DATASETS / "open-images-plates").is_dir(), reason="../shared/datasets is not present")
@pytest.mark.parametrize("region", [None, "US"])  # "US": the shipped firmware config's hint
def test_no_read_passes_the_default_cut_on_300_plate_free_frames(region):
    cut = RecognizerConfig()
    recognizer = Recognizer.from_models(ROOT / "models", region=region)
    frames = plate_free_frames(DATASETS, 300, seed=0)
    assert len(frames) == 300
    false_reads = [(name, hit.text, round(hit.confidence, 3))
                   for name, image in frames for hit in recognizer.recognize(image)
                   if is_confident(hit, cut)]
    assert false_reads == []
