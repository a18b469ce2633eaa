"""Undoing horizontal motion blur on an OCR input, for a second reading of an unsure plate.

Why: a car crossing the frame during the exposure smears its plate sideways. The reader falls
off a cliff between 5 and 9 px of such blur at a roadside plate size (issue 20: 0 of 249
plate-text val crops read at 9 px), while the blur itself is nearly invertible: it is one
known shape (a horizontal line) of one unknown length. The length shows in the image's
horizontal cepstrum as a negative peak at that many pixels (the blur's spectrum has zeros
every width/length cycles), and a Wiener filter with that line undoes most of it.

When the reader reads a crop again deblurred at the estimated length, and when that
reading wins, is one ``DeblurRule`` (chosen on the TRAINING val crops by tools/deblur_rule.py;
docs/ocr.md). The work is on the 144 x 48 model input, so lengths are in model-input pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from agent.vision.ocr import PlateText

MIN_LENGTH = 3  # shortest blur looked for, model-input pixels
MAX_LENGTH = 22  # longest (15 px of blur on a 100 px wide crop)
NOISE = 0.01  # Wiener noise-to-signal ratio: higher keeps noise down, lower sharpens more


@dataclass(frozen=True)
class MotionBlur:
    """The horizontal blur a model input shows: its length and how clearly it shows."""

    length: int  # lag of the cepstrum's deepest valley in MIN..MAX_LENGTH, model-input px
    depth: float  # that valley's depth in standard deviations of the cepstrum over the range


@dataclass(frozen=True)
class DeblurRule:
    """When a crop is read a second time with its blur undone, and when that reading wins.

    Two cases. A crop that shows a blur (a valley from ``seen_length`` to ``seen_max_length``
    px, at least ``seen_depth`` deep) is read again, and the deblurred reading wins unless it
    is less than
    ``seen_gain`` times as confident: a blur turns glyphs into others with confidence, so the
    first reading's confidence says little there. Valleys outside that range are as often the
    plate's own pattern on sharp crops: shorter ones the stroke spacing, longer ones the
    character pitch (16-21 px on the 144 px input). Otherwise an unsure reading (below
    ``unsure_below``, or of no format) is read again, and the deblurred one must be
    ``unsure_gain`` times as confident: that keeps the wrong reads that pass the cut on the
    detector-framed val where they were. Either way the deblurred reading must fit a format
    whenever the first did."""

    unsure_below: float = 0.9
    unsure_gain: float = 2.0
    seen_length: int = 7
    seen_max_length: int = 15
    seen_depth: float = 0.4
    seen_gain: float = 0.5

    def seen(self, blur: MotionBlur) -> bool:
        """Is ``blur`` a blur rather than the plate's own pattern?"""
        return (self.seen_length <= blur.length <= self.seen_max_length
                and blur.depth >= self.seen_depth)

    def gain(self, first: "PlateText", blur: MotionBlur) -> float | None:
        """How many times as confident a deblurred reading must be to replace ``first``, or
        None where no second reading is made."""
        if self.seen(blur):
            return self.seen_gain
        if first.confidence < self.unsure_below or first.format is None:
            return self.unsure_gain
        return None

    @staticmethod
    def wins(first: "PlateText", again: "PlateText", gain: float) -> bool:
        """Does the deblurred reading ``again`` replace ``first`` at this ``gain``?"""
        return again.confidence > first.confidence * gain and bool(again.format
                                                                   or not first.format)


def estimate(x: np.ndarray) -> MotionBlur:
    """The horizontal blur of a model input (float32 [1, 1, H, W], 0..255), from the deepest
    valley of the row-averaged cepstrum in MIN..MAX_LENGTH."""
    g = x[0, 0].astype(np.float64) / 255.0
    g = g - g.mean()
    window = np.hanning(g.shape[1])[None]
    spectrum = np.log(np.abs(np.fft.fft(g * window, axis=1)) + 1e-3).mean(axis=0)
    searched = np.real(np.fft.ifft(spectrum))[MIN_LENGTH:MAX_LENGTH]
    k = int(np.argmin(searched))
    return MotionBlur(MIN_LENGTH + k, float(-searched[k] / (searched.std() + 1e-9)))


def wiener(x: np.ndarray, length: int, noise: float = NOISE) -> np.ndarray:
    """The model input with a horizontal blur of ``length`` px undone (same shape and range).
    The blur is horizontal, so each row is filtered on its own (a 1-D transform per row)."""
    g = x[0, 0].astype(np.float32) / 255.0
    w = g.shape[1]
    n = max(1, int(length))
    pad = 2 * n
    padded = cv2.copyMakeBorder(g, 0, 0, pad, pad, cv2.BORDER_REFLECT)
    size = padded.shape[1]
    kernel = np.zeros(size, np.float32)
    kernel[:n] = 1.0 / n
    kernel = np.roll(kernel, -(n // 2))  # centred, as a blur is
    H = np.fft.rfft(kernel)
    est = np.fft.irfft(np.fft.rfft(padded, axis=1) * (np.conj(H) / (np.abs(H) ** 2 + noise))[None],
                       n=size, axis=1)
    return np.clip(est[:, pad:pad + w] * 255.0, 0, 255).astype(np.float32)[None, None]
