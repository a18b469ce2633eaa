"""tools/bench_frames.py: the per-frame speed figure of docs/benchmarks.md is taken on frames that
hold plates (so the OCR is in it), with the real models; this checks what it measures, not how fast."""
from __future__ import annotations

import pytest

from agent.resources import bundled_models_dir
from agent.vision.recognizer import Recognizer
from tools.bench_frames import scenes, time_size
from tools.val_data import DATASETS  # ../shared/datasets, or $PLATEGATE_DATASETS


@pytest.mark.skipif(not (DATASETS / "open-images-plates").is_dir(), reason="../shared/datasets is not present")
def test_frames_hold_plates_and_both_clocks_are_reported():
    recognizer = Recognizer.from_models(bundled_models_dir(), threads=1)
    images = scenes(3)
    assert len(images) == 3
    out = time_size(recognizer, images, (720, 1280), repeats=1)
    assert out["frames"] == 3
    assert out["reads_per_frame"] > 0  # the OCR runs: the figure is end to end
    assert out["cpu_ms_median"] > 0 and out["wall_ms_median"] > 0
    assert out["passes"] == ["0.400"]  # 720p: one pass at 512 x 288


@pytest.mark.skipif(not (DATASETS / "open-images-plates").is_dir(), reason="../shared/datasets is not present")
def test_4k_frames_run_the_detail_pass_in_proposed_windows():
    recognizer = Recognizer.from_models(bundled_models_dir(), threads=1)
    out = time_size(recognizer, scenes(1), (2160, 3840), repeats=1)
    assert out["passes"] == ["0.350 in proposed windows"]


@pytest.mark.skipif(not (DATASETS / "open-images-plates").is_dir(), reason="../shared/datasets is not present")
def test_proposal_recall_counts_the_same_plates_for_both_ways():
    from agent.vision.detector import PlateDetector
    from tools.proposal_recall import measure

    detectors = {"whole": PlateDetector.from_models(bundled_models_dir(), proposals=False),
                 "proposals": PlateDetector.from_models(bundled_models_dir())}
    report = measure(detectors, DATASETS, 4, 40)
    assert report["frames"] == 4 and report["plates"] > 0
    assert sum(report["plates_by_width"].values()) == report["plates"]
    for name in detectors:
        assert 0 <= report[name]["found"] <= report["plates"]
        assert sum(report[name]["found_by_width"].values()) == report[name]["found"]
        assert report[name]["cpu_ms_median"] > 0
