"""Static int8 quantisation (onnxruntime.quantization, QDQ, per channel) shared by the export tools.

Why one module: the OCR export (tools/export_ocr.py) and the detector's int8 twin
(tools/quantise_detector.py) quantise the same way and differ only in which operators and
nodes stay fp32 and how tight the calibration range is; keeping the call here means a change of
method is made once. No torch: quantising needs ``onnx`` and ``onnxruntime`` only (``pip
install onnx``, part of the ``train`` extra).

Calibration data must come from TRAINING data only (the datasets README: evaluation sets are
never used to calibrate); the callers pass it in.
"""
from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Iterable

import numpy as np


class Calibration:
    """onnxruntime CalibrationDataReader over a list of input tensors for one input name."""

    def __init__(self, tensors: Iterable[np.ndarray], input_name: str = "image") -> None:
        self._it = iter(tensors)
        self._name = input_name

    def get_next(self):
        tensor = next(self._it, None)
        return None if tensor is None else {self._name: tensor}


def quantise(fp32: Path, out: Path, calib: Iterable[np.ndarray], input_name: str = "image",
             op_types: list[str] | None = None, nodes_to_exclude: list[str] | None = None,
             percentile: float | None = 99.99) -> None:
    """Write the int8 QDQ model of ``fp32`` to ``out``: weights int8 per channel, activations
    uint8 with ranges from the ``percentile`` of the calibration activations (None: their
    minimum and maximum).

    ``op_types`` limits which operators are quantised (None: every kind onnxruntime can);
    ``nodes_to_exclude`` keeps the named nodes in fp32. Calibration tensors must all have the
    same shape when ``percentile`` is set (the histogram calibration stacks them).
    """
    from onnxruntime.quantization import (CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)
    from onnxruntime.quantization.shape_inference import quant_pre_process

    # onnxruntime prints its calibration progress on stdout: keep stdout for the tools' JSON
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(sys.stderr):
        pre = Path(tmp) / "pre.onnx"
        quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
        method = {"calibrate_method": CalibrationMethod.MinMax} if percentile is None else {
            "calibrate_method": CalibrationMethod.Percentile,
            "extra_options": {"CalibPercentile": percentile}}
        quantize_static(str(pre), str(out), Calibration(calib, input_name),
                        quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        op_types_to_quantize=op_types, nodes_to_exclude=nodes_to_exclude or [],
                        **method)
