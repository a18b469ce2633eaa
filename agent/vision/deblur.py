"""Undoing motion blur on an OCR input, for a second reading of a blurred or unsure plate.

Why: a car crossing the frame during the exposure smears its plate sideways. The reader falls
off a cliff between 5 and 9 px of such blur at a roadside plate size (issue 20: 0 of 249
plate-text val crops read at 9 px), while the blur itself is nearly invertible: it is one
known shape (a horizontal line) of one unknown length. The length shows in the image's
horizontal cepstrum as a negative peak at that many pixels (the blur's spectrum has zeros
every width/length cycles), and a Wiener filter with that line undoes most of it.

A blur at an angle (a camera that sees the traffic obliquely) leaves its valley off the
horizontal axis of the 2-D cepstrum; ``estimate_tilted`` finds it there and ``wiener_tilted``
undoes that line. When the reader reads a crop again deblurred, and when that reading wins,
is one ``DeblurRule`` (chosen on the TRAINING val crops by tools/deblur_rule.py;
docs/ocr.md). The work is on the 144 x 48 model input, so lengths are in model-input pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Callable

import cv2
import numpy as np

if TYPE_CHECKING:
    from agent.vision.ocr import PlateText

MIN_LENGTH = 3  # shortest blur looked for, model-input pixels
MAX_LENGTH = 22  # longest (15 px of blur on a 100 px wide crop)
NOISE = 0.01  # Wiener noise-to-signal ratio: higher keeps noise down, lower sharpens more
MAX_ANGLE = 30.0  # a tilted blur is looked for up to this many degrees off horizontal
ANGLE_STEP = 2.0  # degrees between the directions tried along the valley's ray


@dataclass(frozen=True)
class MotionBlur:
    """The horizontal blur a model input shows: its length and how clearly it shows."""

    length: int  # lag of the cepstrum's deepest valley in MIN..MAX_LENGTH, model-input px
    depth: float  # that valley's depth in standard deviations of the cepstrum over the range


@dataclass(frozen=True)
class TiltedBlur:
    """A blur along a line at ``angle`` degrees (counter-clockwise from horizontal, as
    ``line_kernel`` draws it), ``length`` model-input px long."""

    length: int
    angle: float


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
    whenever the first did.

    A reading still unsure after that (below ``unsure_below``, or of no format) is read once
    more with a tilted blur undone, where the 2-D cepstrum finds one at least
    ``tilted_min_angle`` degrees off horizontal and ``tilted_min_length`` px long. That reading
    wins only if it is ``tilted_gain`` times as confident and at least ``tilted_min_confidence``
    sure (and fits a format whenever the kept one did): the angle is the least certain part
    of the estimate, so only a sure reading of the result counts."""

    unsure_below: float = 0.9
    unsure_gain: float = 2.0
    seen_length: int = 7
    seen_max_length: int = 15
    seen_depth: float = 0.4
    seen_gain: float = 0.5
    tilted_min_angle: float = 2.0
    tilted_min_length: int = 7
    tilted_gain: float = 1.0
    tilted_min_confidence: float = 0.98

    def seen(self, blur: MotionBlur) -> bool:
        """Is ``blur`` a blur rather than the plate's own pattern?"""
        return (self.seen_length <= blur.length <= self.seen_max_length
                and blur.depth >= self.seen_depth)

    def gain(self, first: "PlateText", blur: MotionBlur) -> float | None:
        """How many times as confident a deblurred reading must be to replace ``first``, or
        None where no second reading is made."""
        if self.seen(blur):
            return self.seen_gain
        if self.unsure(first):
            return self.unsure_gain
        return None

    @staticmethod
    def wins(first: "PlateText", again: "PlateText", gain: float) -> bool:
        """Does the deblurred reading ``again`` replace ``first`` at this ``gain``?"""
        return again.confidence > first.confidence * gain and bool(again.format
                                                                   or not first.format)

    def unsure(self, reading: "PlateText") -> bool:
        """Is ``reading`` too unsure to leave alone (below ``unsure_below``, or of no format)?"""
        return reading.confidence < self.unsure_below or reading.format is None

    def tilted_applies(self, blur: TiltedBlur) -> bool:
        """Is ``blur`` far enough off horizontal, and long enough, to undo as tilted?"""
        return abs(blur.angle) >= self.tilted_min_angle and blur.length >= self.tilted_min_length

    def tilted_wins(self, kept: "PlateText", again: "PlateText") -> bool:
        """Does the reading with a tilted blur undone replace ``kept``?"""
        return again.confidence >= self.tilted_min_confidence and self.wins(kept, again,
                                                                            self.tilted_gain)

    def decide(self, first: "PlateText", blur: MotionBlur,
               read_unblurred: Callable[[], "PlateText"],
               tilted_blur: Callable[[], TiltedBlur],
               read_untilted: Callable[[TiltedBlur], "PlateText"]) -> tuple["PlateText", int]:
        """The reading to keep of a crop first read as ``first``, whose horizontal blur is
        ``blur``, and how many more model runs that took. The callables read the crop with its
        horizontal blur undone, estimate its tilted blur, and read it with that undone; each is
        called only where this rule needs it. The reader and tools/deblur_rule.py both decide
        here, so the rule chosen on the val crops is the one that runs."""
        kept, runs = first, 0
        gain = self.gain(first, blur)
        if gain is not None:
            runs += 1
            again = read_unblurred()
            if self.wins(first, again, gain):
                kept = again
        if self.unsure(kept):
            tilt = tilted_blur()
            if self.tilted_applies(tilt):
                runs += 1
                again = read_untilted(tilt)
                if self.tilted_wins(kept, again):
                    kept = again
        return kept, runs


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
    The blur is horizontal, so each row is filtered on its own (a 1-D transform per row): the
    same result as ``wiener_tilted`` at angle 0, at a fifth of its cost, for the common case."""
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


def line_kernel(length: int, angle: float = 0.0) -> np.ndarray:
    """A linear motion-blur kernel: a line ``length`` px long at ``angle`` degrees
    (counter-clockwise; 0 = horizontal, the way a car crossing the frame smears), summing to 1.
    The synthetic camera (tools/synth/camera.py) draws its blur with the same line."""
    length = max(1, int(length))
    k = np.zeros((length, length), np.float32)
    k[length // 2, :] = 1.0
    if angle:
        M = cv2.getRotationMatrix2D((length / 2 - 0.5, length / 2 - 0.5), float(angle), 1.0)
        k = cv2.warpAffine(k, M, (length, length))
    return k / max(k.sum(), 1e-6)


def estimate_tilted(x: np.ndarray) -> TiltedBlur:
    """The blur of a model input as a line at any angle within MAX_ANGLE of horizontal: the
    deepest valley of the 2-D cepstrum at lags MIN..MAX_LENGTH in those directions, its
    direction then refined along the valley's ray (ANGLE_STEP degrees, half-pixel lengths)."""
    g = x[0, 0].astype(np.float64) / 255.0
    window, searched, searched_lag = _tilted_search(*g.shape)
    cepstrum = np.real(np.fft.ifft2(np.log(np.abs(np.fft.fft2((g - g.mean()) * window)) + 1e-3)))
    start = float(searched_lag[int(np.argmin(cepstrum[searched]))])
    lengths = np.array([start - 0.5, start, start + 0.5])[:, None]
    angles = np.arange(-MAX_ANGLE, MAX_ANGLE + 1e-6, ANGLE_STEP)[None, :]
    values = _bilinear(cepstrum, lengths * np.cos(np.radians(angles)),
                       lengths * np.sin(np.radians(angles)))
    i, j = np.unravel_index(int(np.argmin(values)), values.shape)
    # Rows grow downwards, so a valley at +angle in array terms is a line at -angle.
    return TiltedBlur(max(1, int(round(float(lengths[i, 0])))), -float(angles[0, j]))


@lru_cache(maxsize=4)
def _tilted_search(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For an input of this size (always the model's): the 2-D window, the mask of the
    cepstrum cells searched (lags MIN..MAX_LENGTH within MAX_ANGLE of horizontal, rightwards)
    and those cells' lags. They depend on the size only, so they are built once, not per crop."""
    window = np.outer(np.hanning(h), np.hanning(w))
    dy, dx = np.meshgrid(np.fft.fftfreq(h, 1 / h), np.fft.fftfreq(w, 1 / w), indexing="ij")
    lag = np.hypot(dx, dy)
    searched = ((lag >= MIN_LENGTH) & (lag < MAX_LENGTH) & (dx > 0)
                & (np.abs(np.degrees(np.arctan2(dy, dx))) <= MAX_ANGLE))
    return window, searched, lag[searched]


def _bilinear(a: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``a`` at the points (x, y), wrapping around (a cepstrum is periodic)."""
    h, w = a.shape
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    fx, fy = x - x0, y - y0
    return ((1 - fx) * (1 - fy) * a[y0 % h, x0 % w] + fx * (1 - fy) * a[y0 % h, (x0 + 1) % w]
            + (1 - fx) * fy * a[(y0 + 1) % h, x0 % w] + fx * fy * a[(y0 + 1) % h, (x0 + 1) % w])


def wiener_tilted(x: np.ndarray, blur: TiltedBlur, noise: float = NOISE) -> np.ndarray:
    """The model input with a blur along ``blur``'s line undone (same shape and range)."""
    g = x[0, 0].astype(np.float32) / 255.0
    h, w = g.shape
    pad = 2 * blur.length
    padded = cv2.copyMakeBorder(g, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    line = line_kernel(blur.length, blur.angle)
    kernel = np.zeros_like(padded)
    kernel[:line.shape[0], :line.shape[1]] = line
    kernel = np.roll(kernel, (-(line.shape[0] // 2), -(line.shape[1] // 2)), axis=(0, 1))
    H = np.fft.rfft2(kernel)
    est = np.fft.irfft2(np.fft.rfft2(padded) * (np.conj(H) / (np.abs(H) ** 2 + noise)),
                        s=padded.shape)
    return np.clip(est[pad:pad + h, pad:pad + w] * 255.0, 0, 255).astype(np.float32)[None, None]
