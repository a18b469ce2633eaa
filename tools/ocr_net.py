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


def _block(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True)]


class PlateCRNN(nn.Module):
    def __init__(self, width: tuple[int, ...] = (16, 32, 64, 64, 96, 96), hidden: int = 96):
        super().__init__()
        c1, c2, c3, c4, c5, c6 = width
        self.features = nn.Sequential(
            *_block(1, c1), nn.MaxPool2d(2),            # 24 x 72
            *_block(c1, c2), nn.MaxPool2d(2),           # 12 x 36
            *_block(c2, c3), *_block(c3, c4), nn.MaxPool2d((2, 1)),  # 6 x 36
            *_block(c4, c5), *_block(c5, c6), nn.MaxPool2d((2, 1)),  # 3 x 36
            nn.Conv2d(c6, 128, (3, 1), bias=False), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
        )
        self.rnn = nn.LSTM(128, hidden, bidirectional=True, batch_first=True)
        self.dropout = nn.Dropout(0.2)
        self.fc = nn.Linear(2 * hidden, NUM_CLASSES)

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """[N, 1, H, W] 0..255 -> [N, T, C] logits."""
        mean = x.mean(dim=(2, 3), keepdim=True)
        std = x.std(dim=(2, 3), keepdim=True)
        x = (x - mean) / (std + 8.0)
        f = self.features(x)            # N, 128, 1, T
        f = f.squeeze(2).permute(0, 2, 1)  # N, T, 128
        f, _ = self.rnn(f)
        return self.fc(self.dropout(f))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.logits(x), dim=-1)
