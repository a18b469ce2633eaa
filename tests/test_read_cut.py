"""The agent's confidence cut (agent.vision.recognizer.is_confident) on hand-made hits.

Reads that fit a plate format pass on confidence alone; reads of no format (sign or vehicle
lettering looks like that) need a higher confidence and, when a detector found them, a higher
detection score. A crop read (no detector) is judged on confidence alone.
"""
from __future__ import annotations

import pytest

from agent.config.schema import RecognizerConfig
from agent.vision.recognizer import PlateHit, is_confident

CUT = RecognizerConfig(min_confidence=0.7, min_confidence_no_format=0.9,
                       min_detection_score_no_format=0.6)


def hit(text="ABC1234", confidence=0.95, fmt="br_old", score=0.8) -> PlateHit:
    return PlateHit(text, confidence, (0, 0, 100, 30), format=fmt, detection_score=score)


@pytest.mark.parametrize("plate, expected", [
    (hit(), True),
    (hit(confidence=0.69), False),                        # under min_confidence
    (hit(text=""), False),                                # nothing read
    (hit(fmt="us_ca_serial", confidence=0.71, score=0.51), True),  # a format: score not needed
    (hit(fmt=None, text="ARRIVA", confidence=0.98, score=0.53), False),  # sign-like detection
    (hit(fmt=None, text="ARRIVA", confidence=0.85, score=0.9), False),   # not sure enough
    (hit(fmt=None, text="GOFAST", confidence=0.95, score=0.7), True),    # vanity plate
    (hit(fmt=None, text="GOFAST", confidence=0.95, score=None), True),   # crop, no detector
])
def test_cut(plate, expected):
    assert is_confident(plate, CUT) is expected


def test_thresholds_are_device_settings():
    loose = RecognizerConfig(min_detection_score_no_format=0.0)
    sign = hit(fmt=None, text="ARRIVA", confidence=0.98, score=0.53)
    assert not is_confident(sign, CUT)
    assert is_confident(sign, loose)
