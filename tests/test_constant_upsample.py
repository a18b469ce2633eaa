"""tools/constant_upsample.py and the shipped detector's graph: the decoder upsamples x2 by a
constant, which onnxruntime runs in its blocked layout (a quarter of the model's time at 4K went
to the size-computing form), and the rewrite changes no output."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agent.vision.models import _dummy_input, model_entry
from helpers.paths import MODELS

onnx = pytest.importorskip("onnx")  # the test extra installs it

from onnx import TensorProto, helper  # noqa: E402

from tools import constant_upsample as cu  # noqa: E402


def _size_chain_model(path: Path) -> None:
    """A tiny decoder step in the old exported form: the coarse map is resized to the size of
    the fine one, read from the fine tensor's shape at run time, and added to it."""
    nodes = [
        helper.make_node("AveragePool", ["x"], ["coarse"], kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Shape", ["x"], ["shape"]),
        helper.make_node("Resize", ["coarse", "", "", "shape"], ["up"], mode="nearest",
                         coordinate_transformation_mode="asymmetric", nearest_mode="floor"),
        helper.make_node("Add", ["up", "x"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes, "decoder_step",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, "h", "w"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, "h", "w"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, str(path))


def test_rewrite_gives_constant_scales_drops_the_size_chain_and_keeps_the_outputs(tmp_path):
    source, target = tmp_path / "old.onnx", tmp_path / "new.onnx"
    _size_chain_model(source)
    assert cu.rewrite(source, target) == 1
    graph = onnx.load(str(target)).graph
    assert [n.op_type for n in graph.node] == ["AveragePool", "Resize", "Add"]
    assert cu.largest_difference(source, target) == 0.0
    assert cu.main([str(source), str(tmp_path / "again.onnx")]) == 0


def test_a_model_with_nothing_to_rewrite_is_refused_with_one_line(tmp_path, capsys):
    ocr = MODELS / model_entry(MODELS, "plate_ocr")["file_fp32"]
    assert cu.main([str(ocr), str(tmp_path / "x.onnx")]) == 2
    assert "has no Resize node to rewrite" in capsys.readouterr().err
    assert not (tmp_path / "x.onnx").exists()


def test_the_shipped_detector_upsamples_by_a_constant_scale():
    graph = onnx.load(str(MODELS / model_entry(MODELS, "plate_detector")["file"])).graph
    constants = {i.name for i in graph.initializer}
    resizes = [n for n in graph.node if n.op_type == "Resize"]
    assert len(resizes) == 3
    for node in resizes:
        assert len(node.input) == 3 and node.input[2] in constants  # scales, no sizes
    assert not [n for n in graph.node if n.op_type == "Shape"]


def test_warm_up_input_uses_the_manifests_size_multiple():
    class Meta:
        shape = [1, 3, "height", "width"]
        type = "tensor(float)"

    assert _dummy_input(Meta(), 32).shape == (1, 3, 32, 32)
    assert _dummy_input(Meta()).shape == (1, 3, 1, 1)
