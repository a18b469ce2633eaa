"""Undoing horizontal motion blur on an OCR input, for a second reading of an unsure plate.

Why: a car crossing the frame during the exposure smears its plate sideways. The reader falls
off a cliff between 5 and 9 px of such blur at a roadside plate size (issue 20: 0 of 249
plate-text val crops read at 9 px), while the blur itself is nearly invertible: it is one
known shape (a horizontal line) of one unknown length. The length shows in the image's
horizontal cepstrum as a negative peak at that many pixels (the blur's spectrum has zeros
every width/length cycles), and a Wiener filter with that line undoes most of it.

The reader uses this only for a reading that is unsure (below ``DEBLUR_BELOW`` or of no
format): it reads the crop again deblurred at the estimated length, and keeps the new reading
only if it is twice as confident and fits a format whenever the first did. Chosen on the TRAINING val crops (docs/ocr.md); the work is on the 144 x 48 model input,
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
