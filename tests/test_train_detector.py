"""The detector networks of tools/train_detector.py keep the runtime's model contract.

Why: `agent/vision/detector.py` knows nothing of the network inside the ONNX file, only its
input (NCHW, any size that is a multiple of 32) and outputs (a heatmap and four regression
planes at stride 4). A new architecture must export to exactly that, and a checkpoint of one
architecture must not be exported as another.
"""
from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnx")

from agent.vision.detector import PlateDetector  # noqa: E402
from tools.train_detector import ARCHS, build_model, export_onnx, main  # noqa: E402


@pytest.mark.parametrize("arch", ARCHS)
def test_each_architecture_exports_to_the_runtime_contract(tmp_path, arch):
    torch.manual_seed(0)
    model = build_model(1.0, arch)
    entry = export_onnx(model, tmp_path / "plate_detector.onnx", 512, 0.5, {"arch": arch},
                        tmp_path)
    assert entry["training"]["arch"] == arch
    detector = PlateDetector.from_models(tmp_path)
    for height, width in ((288, 512), (768, 1344)):  # the 720p and 4K passes
        tensor = np.zeros((1, 3, height, width), np.float32)
        heat, reg = detector.session.run(None, {detector.input_name: tensor})
        assert heat.shape == (1, 1, height // 4, width // 4)
        assert reg.shape == (1, 4, height // 4, width // 4)
    frame = np.random.default_rng(1).integers(0, 255, (2160, 3840, 3), dtype=np.uint8)
    assert isinstance(detector.detect(frame), list)  # decoded end to end without error


def test_lite_costs_fewer_multiply_adds_than_base():
    """The point of ``lite``: count the convolutions' multiply-adds at 1344 x 768."""
    def macs(model) -> int:
        total = 0

        def hook(module, _inputs, output):
            nonlocal total
            k = module.weight.shape[1] * module.weight.shape[2] * module.weight.shape[3]
            total += output.numel() * k

        handles = [m.register_forward_hook(hook) for m in model.modules()
                   if isinstance(m, torch.nn.Conv2d)]
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, 768, 1344))
        for handle in handles:
            handle.remove()
        return total

    base, lite = macs(build_model(1.0, "base")), macs(build_model(1.0, "lite"))
    assert lite < 0.6 * base


def test_export_only_builds_the_checkpoints_own_architecture(tmp_path):
    model = build_model(1.0, "lite")
    torch.save({"model": model.state_dict(), "meta": {"arch": "lite", "width": 1.0},
                "threshold": 0.45}, tmp_path / "best.pt")
    models = tmp_path / "models"
    models.mkdir()
    assert main(["--out", str(tmp_path), "--export-only", "--models-dir", str(models)]) == 0
    entry = json.loads((models / "manifest.json").read_text())["models"]["plate_detector"]
    assert entry["training"]["arch"] == "lite"
    assert entry["score_threshold"] == 0.45


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown detector architecture 'tiny'"):
        build_model(1.0, "tiny")


def _figures(found=450, precision=0.9, framed_recall=0.9, top1=0.7, wrong=6, ms=40.0) -> dict:
    return {"training_val": {"found": found, "precision": precision},
            "framed_val": {"plates": 246, "detection_recall": framed_recall, "top1": top1,
                           "accepted": {"wrong": wrong}},
            "model_cpu_ms_1344x768": ms}


def test_choose_detector_rule_allows_small_losses_and_refuses_larger_ones():
    from tools.choose_detector import MAX_LOSS, checks

    shipped = _figures()
    assert all(checks(shipped, _figures(found=450 - MAX_LOSS, ms=30.0)).values())
    one_plate = 1 / 246
    refused = {
        "training_val_recall": _figures(found=450 - MAX_LOSS - 1, ms=30.0),
        "training_val_precision": _figures(precision=0.88, ms=30.0),
        "framed_val_recall": _figures(framed_recall=0.9 - (MAX_LOSS + 1) * one_plate, ms=30.0),
        "framed_val_top1": _figures(top1=0.7 - (MAX_LOSS + 1) * one_plate, ms=30.0),
        "framed_val_wrong_reads": _figures(wrong=8, ms=30.0),
        "faster": _figures(ms=41.0),
    }
    for failing, candidate in refused.items():
        result = checks(shipped, candidate)
        assert [k for k, ok in result.items() if not ok] == [failing]


def test_distillation_costs_nothing_for_a_perfect_copy_and_pulls_towards_the_teacher():
    from tools.train_detector import Teacher, distillation_loss
    from helpers.paths import MODELS

    teacher = Teacher(MODELS / "plate_detector.onnx")
    x = np.random.default_rng(2).normal(size=(2, 3, 64, 96)).astype(np.float32)
    heat, reg = (torch.from_numpy(a) for a in teacher.outputs(x))
    assert heat.shape == (2, 1, 16, 24) and reg.shape == (2, 4, 16, 24)
    assert distillation_loss(heat, reg, heat, reg).item() == pytest.approx(0.0, abs=1e-5)
    student_heat = torch.full_like(heat, 0.5, requires_grad=True)
    loss = distillation_loss(student_heat, reg, heat, reg)
    loss.backward()
    assert loss.item() > 0
    # the gradient moves each cell's score towards the teacher's
    assert torch.all((student_heat.grad > 0) == (heat < 0.5))


def test_export_only_without_a_checkpoint_is_refused_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tmp_path / "no_run"), "--export-only"])
    assert stop.value.code == 2
    assert "no_run/best.pt does not exist" in capsys.readouterr().err


def test_starting_from_the_shipped_onnx_rebuilds_it_and_leaves_only_changed_layers_fresh():
    """``--init-from models/plate_detector.onnx``: the base network computes what the shipped
    file computes; a network with one layer changed starts from it everywhere else."""
    from helpers.paths import MODELS
    from agent.vision.models import cpu_session
    from tools.onnx_init import load_folded_convs, onnx_convs

    shipped = MODELS / "plate_detector.onnx"
    rng = np.random.default_rng(4)
    samples = torch.from_numpy(rng.normal(0.0, 1.0, (6, 3, 96, 160)).astype(np.float32))
    model = build_model(1.0, "base")
    assert load_folded_convs(model, onnx_convs(shipped), samples) == []
    session = cpu_session(shipped)
    heat, reg = (np.concatenate(parts) for parts in zip(
        *[session.run(None, {"image": one[None].numpy()}) for one in samples]))
    with torch.no_grad():
        ours_heat, ours_reg = model(samples)
    assert np.abs(ours_heat.numpy() - heat).max() < 1e-4
    assert np.abs(ours_reg.numpy() - reg).max() < 1e-3
    fresh = load_folded_convs(build_model(1.0, "separable-head"), onnx_convs(shipped), samples)
    assert fresh == ["m4.1.0.0", "m4.1.1.0"]


def test_init_from_a_missing_file_is_refused_with_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tmp_path / "run"), "--init-from", str(tmp_path / "nope.onnx")])
    assert stop.value.code == 2
    assert "nope.onnx: no such file" in capsys.readouterr().err


def test_train_only_moves_the_named_layers_and_nothing_else():
    from tools.train_detector import train_only

    torch.manual_seed(3)
    model = build_model(1.0, "separable-head")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert train_only(model, ["m4", "heat"]) > 0
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    heat, reg = model(torch.randn(2, 3, 64, 96))
    (heat.mean() + reg.abs().mean()).backward()
    opt.step()
    changed = {k.split(".")[0] for k, v in model.state_dict().items()
               if not torch.equal(v, before[k])}
    assert changed == {"m4", "heat"}  # weights and norm statistics of the rest stay put
    with pytest.raises(ValueError, match="no layer of the network has that name"):
        train_only(build_model(1.0, "base"), ["head4"])


def test_train_only_an_unknown_layer_is_refused_before_any_data_is_read(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--out", str(tmp_path / "run"), "--datasets", str(tmp_path / "none"),
              "--train-only", "head4"])
    assert stop.value.code == 2
    assert "--train-only head4: no layer of the network has that name" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
