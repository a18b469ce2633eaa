"""Undoing horizontal motion blur on an OCR input, for a second reading of an unsure plate.

Why: a car crossing the frame during the exposure smears its plate sideways. The reader falls
off a cliff between 5 and 9 px of such blur at a roadside plate size (issue 20: 0 of 249
plate-text val crops read at 9 px), while the blur itself is nearly invertible: it is one
known shape (a horizontal line) of one unknown length. The length shows in the image's
horizontal cepstrum as a negative peak at that many pixels (the blur's spectrum has zeros
every width/length cycles), and a Wiener filter with that line undoes most of it.

The reader uses this only for a reading that is unsure (below ``DEBLUR_BELOW`` or of no
format): it reads the crop again deblurred at the estimated length and one pixel either side,
and keeps a new reading only if it is more confident and fits a format whenever the first
did. Chosen on the TRAINING val crops (docs/ocr.md); the work is on the 144 x 48 model input,
so lengths are in model-input pixels.
"""
from __future__ import annotations

import cv2
import numpy as np

MIN_LENGTH = 3  # shortest blur looked for, model-input pixels
MAX_LENGTH = 22  # longest (15 px of blur on a 100 px wide crop)
NOISE = 0.01  # Wiener noise-to-signal ratio: higher keeps noise down, lower sharpens more


def motion_length(x: np.ndarray) -> int:
    """Estimated horizontal blur length of a model input (float32 [1, 1, H, W], 0..255):
    the lag of the deepest valley of the row-averaged cepstrum in MIN..MAX_LENGTH."""
    g = x[0, 0].astype(np.float64) / 255.0
    g = g - g.mean()
    window = np.hanning(g.shape[1])[None]
    spectrum = np.log(np.abs(np.fft.fft(g * window, axis=1)) + 1e-3).mean(axis=0)
    cepstrum = np.real(np.fft.ifft(spectrum))
    return MIN_LENGTH + int(np.argmin(cepstrum[MIN_LENGTH:MAX_LENGTH]))


def line_kernel(length: int) -> np.ndarray:
    """A horizontal line ``length`` px long, summing to 1 (the blur of a sideways motion)."""
    return np.full((1, max(1, int(length))), 1.0 / max(1, int(length)), np.float64)


def wiener(x: np.ndarray, length: int, noise: float = NOISE) -> np.ndarray:
    """The model input with a horizontal blur of ``length`` px undone (same shape and range)."""
    g = x[0, 0].astype(np.float64) / 255.0
    h, w = g.shape
    pad = 2 * int(length)
    padded = cv2.copyMakeBorder(g, pad, pad, pad, pad, cv2.BORDER_REFLECT)
    kernel = np.zeros_like(padded)
    k = line_kernel(length)
    kernel[0, :k.shape[1]] = k[0]
    kernel = np.roll(kernel, -(k.shape[1] // 2), axis=1)  # centred, as a blur is
    H = np.fft.fft2(kernel)
    est = np.fft.ifft2(np.fft.fft2(padded) * np.conj(H) / (np.abs(H) ** 2 + noise))
    out = np.clip(np.real(est)[pad:pad + h, pad:pad + w] * 255.0, 0, 255)
    return out.astype(np.float32)[None, None]
