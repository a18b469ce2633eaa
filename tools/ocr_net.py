"""The plate OCR network (torch): a small CRNN read with CTC.

Why this shape: plates are one line of 2-10 characters, so a convolutional feature extractor
that collapses the height, a bidirectional LSTM over the width (it learns which layouts are
plausible) and CTC (no character segmentation needed) is the smallest design that reads
vanity plates as well as fixed formats. Input [N, 1, 48, 144] grey 0..255; contrast is
normalised inside the network so exposure differences do not reach the weights.
Output: per-column class probabilities [N, T=36, 37] (class 0 = CTC blank, then CHARSET).
"""
from __future__ import annotations

import torch
from torch import nn

from agent.vision.plate_formats import CHARSET

NUM_CLASSES = len(CHARSET) + 1

# Named sizes, so a checkpoint can say which one it holds ("arch") and export rebuilds it.
# "small" was v1.0.0 (0.37 M parameters); "base" (0.80 M) costs about 2x the compute per crop,
# still well inside the 2 ms budget, and trains to a lower loss on the same data.
ARCHS: dict[str, dict] = {
    "small": {"width": (24, 48, 64, 96, 96), "seq": 128},
    "base": {"width": (32, 64, 96, 128, 160), "seq": 192},
}


def _block(cin: int, cout: int, stride: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


def _seq_block(channels: int, dilation: int) -> list[nn.Module]:
    return [nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm1d(channels), nn.ReLU(inplace=True)]


class PlateCRNN(nn.Module):
    """Strided convolutions down to one row of 36 columns, then dilated 1-D convolutions over
    the columns (context of about 15 columns, i.e. 3-4 characters each side) instead of an
    LSTM: an LSTM tripled the training time on this CPU and quantises worse."""

    def __init__(self, width: tuple[int, ...] = (24, 48, 64, 96, 96), seq: int = 128):
        super().__init__()
        c1, c2, c3, c4, c5 = width
        self.features = nn.Sequential(
            *_block(1, c1, 2),                       # 24 x 72
            *_block(c1, c2, 2),                      # 12 x 36
            *_block(c2, c3), nn.MaxPool2d((2, 1)),   # 6 x 36
            *_block(c3, c4), nn.MaxPool2d((2, 1)),   # 3 x 36
            *_block(c4, c5),
            nn.Conv2d(c5, seq, (3, 1), bias=False), nn.BatchNorm2d(seq), nn.ReLU(inplace=True),
        )
        self.sequence = nn.Sequential(*_seq_block(seq, 1), *_seq_block(seq, 2),
                                      *_seq_block(seq, 4), nn.Dropout(0.15))
        self.classifier = nn.Conv1d(seq, NUM_CLASSES, 1)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 1, H, W] grey 0..255 -> [N, T, C] logits."""
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = x.std(dim=(2, 3), keepdim=True)
        x = (x - mean) / (std + 8.0)
        f = self.features(x).squeeze(2)        # N, seq, T
        f = self.sequence(f)
        return self.classifier(f).permute(0, 2, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=-1)


def build(arch: str) -> PlateCRNN:
    """The network of a named size (``ARCHS``)."""
    if arch not in ARCHS:
        raise ValueError(f"unknown OCR architecture {arch!r}; known: {', '.join(ARCHS)}")
    return PlateCRNN(**ARCHS[arch])


def checkpoint_arch(checkpoint: dict) -> str:
    """The network size a checkpoint holds; those from before ARCHS existed hold "small"."""
    return checkpoint.get("arch", "small")


def load_weights(model: PlateCRNN, arch: str, checkpoint: dict, source: object) -> None:
    """Load a checkpoint's weights into ``model`` (of size ``arch``), refusing a checkpoint of
    another size with a message naming both, rather than torch's list of mismatched tensors."""
    held = checkpoint_arch(checkpoint)
    if held != arch:
        raise ValueError(f"{source}: checkpoint holds the {held!r} network, not {arch!r} "
                         f"(pass --arch {held})")
    model.load_state_dict(checkpoint["model"])
