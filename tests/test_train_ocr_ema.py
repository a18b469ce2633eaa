"""The weight average that tools/train_ocr.py validates and exports (needs the `train` extra)."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tools.ocr_net import build  # noqa: E402
from tools.train_ocr import WeightAverage  # noqa: E402


def test_average_moves_towards_the_trained_weights_by_one_minus_decay():
    model = build("small")
    avg = WeightAverage(model, decay=0.75)
    before = [p.detach().clone() for p in avg.model.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    avg.update(model)
    for old, new in zip(before, avg.model.parameters()):
        assert torch.allclose(new, old + 0.25, atol=1e-6)


def test_average_is_not_trained_and_resumes_from_saved_state():
    model = build("small")
    avg = WeightAverage(model, decay=0.9)
    assert not any(p.requires_grad for p in avg.model.parameters())
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(0.5)
    avg.update(model)
    resumed = WeightAverage(model, decay=0.9, state=avg.model.state_dict())
    for a, b in zip(avg.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
