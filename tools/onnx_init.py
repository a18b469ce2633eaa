"""Start a training run from a shipped ONNX model instead of a torch checkpoint.

Why: checkpoints stay out of git, so a new session (or a new engineer) holds only the ONNX
files in `models/`. The export folds each batch norm into the convolution before it, so the
ONNX weights are ``W' = W * g / s`` with a bias ``b' = beta - mean * g / s``. The split
between ``W`` and the norm is lost, but it is not needed: measuring each convolution's output
(``W' x``, no bias) on training samples gives a mean ``m`` and deviation ``d`` per channel,
and the norm set to running mean ``m``, running variance ``d**2``, weight ``d`` and bias
``b' + m`` computes exactly ``W' x + b'`` in eval mode, while in train mode (batch
statistics close to ``m`` and ``d``) it starts near the same function and keeps the norm's
effect on the training dynamics.

Used by the OCR (`tools/ocr_onnx_init.py`, which also checks the network's size) and the
detector (`tools/train_detector.py --init-from models/plate_detector.onnx`, where a changed
layer keeps its fresh weights). Each convolution must be followed by its norm as the next
module of the same ``nn.Sequential`` (``conv, norm, relu``), or have a bias and no norm.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from tools.onnx_file import load_onnx

_BN_EPS_FLOOR = 1e-6  # a channel that never fires keeps a finite norm
_CONVS = (nn.Conv1d, nn.Conv2d)


def onnx_convs(path: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Module path (``features.0``, ``s4.1.pw.0``) -> (weight, bias) of each ONNX Conv."""
    from onnx import numpy_helper

    graph = load_onnx(path).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    convs = {}
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        module = _module_path(node.name)
        if any(name not in inits for name in node.input[1:3]):
            raise ValueError(f"{path}: convolution {node.name} has no float weights (an int8 "
                             "model? start from its fp32 twin)")
        weight, bias = (inits[name] for name in node.input[1:3])
        convs[module] = (weight, bias)
    return convs


def _module_path(node_name: str) -> str:
    """The module path of a node torch's exporter named: ``/features/features.0/Conv`` is
    ``features.0``; ``/s4/s4.1/dw/dw.0/Conv`` is ``s4.1.dw.0`` (a scope names a Sequential's
    child after its parent's scope, a custom module's attribute by the attribute alone)."""
    parts = node_name.strip("/").split("/")
    segments: list[str] = []
    for scope in parts[:-1] if len(parts) > 1 else parts:
        if segments and scope.startswith(segments[-1] + "."):
            segments[-1] = scope  # a Sequential's child: "s4" then "s4.1"
        else:
            segments.append(scope)  # an attribute of a custom module: "dw"
    return ".".join(segments)


def load_folded_convs(model: nn.Module, convs: dict[str, tuple[np.ndarray, np.ndarray]],
                      samples: torch.Tensor) -> list[str]:
    """Load every convolution of ``convs`` whose module exists in ``model`` with the same
    weight shape, re-deriving each one's batch norm from its outputs on ``samples`` (training
    data). Returns the model's convolutions that kept their own weights (new or reshaped
    layers), so a caller can say what starts fresh."""
    modules = dict(model.named_modules())
    pairs: list[tuple[nn.Module, nn.Module]] = []
    loaded: set[str] = set()
    for name, (weight, bias) in convs.items():
        conv = modules.get(name)
        if not isinstance(conv, _CONVS) or tuple(conv.weight.shape) != weight.shape:
            continue
        loaded.add(name)
        conv.weight.data = torch.from_numpy(weight.copy())
        if conv.bias is not None:  # an output layer: no norm follows it
            conv.bias.data = torch.from_numpy(bias.copy())
            continue
        prefix, index = name.rsplit(".", 1)
        norm = modules[f"{prefix}.{int(index) + 1}"]
        # Identity norm first, so the measuring pass computes the ONNX function exactly.
        norm.running_mean.zero_()
        norm.running_var.fill_(1.0 - norm.eps)
        norm.weight.data.fill_(1.0)
        norm.bias.data = torch.from_numpy(bias.copy())
        pairs.append((conv, norm))

    stats: dict[nn.Module, tuple[torch.Tensor, torch.Tensor]] = {}

    def measure(conv: nn.Module, _inputs, output: torch.Tensor) -> None:
        dims = [d for d in range(output.dim()) if d != 1]
        stats[conv] = (output.mean(dim=dims), output.var(dim=dims, unbiased=False))

    hooks = [conv.register_forward_hook(measure) for conv, _ in pairs]
    model.eval()
    with torch.no_grad():
        model(samples)
    for hook in hooks:
        hook.remove()
    for conv, norm in pairs:
        mean, var = stats[conv]
        var = var.clamp_min(_BN_EPS_FLOOR)
        scale = torch.sqrt(var + norm.eps)
        norm.running_mean.copy_(mean)
        norm.running_var.copy_(var)
        norm.weight.data = scale.clone()
        norm.bias.data = norm.bias.data + mean
    return [name for name, module in modules.items()
            if isinstance(module, _CONVS) and name not in loaded]
