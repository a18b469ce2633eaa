"""CTC probabilities built by hand, for testing the decoding without a model."""
from __future__ import annotations

import numpy as np

from agent.vision.plate_formats import CHARSET


def one_hot_probs(text: str, repeat: int = 2, columns: int = 36) -> np.ndarray:
    """CTC probabilities that spell ``text`` exactly (blank between characters)."""
    probs = np.zeros((columns, len(CHARSET) + 1), np.float32)
    probs[:, 0] = 1.0
    t = 1
    for ch in text:
        for _ in range(repeat):
            probs[t] = 0
            probs[t, CHARSET.index(ch) + 1] = 1.0
            t += 1
        t += 1  # one blank column between characters
    return probs
