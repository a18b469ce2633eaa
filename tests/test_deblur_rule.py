"""Choosing the deblurring rule (tools/deblur_rule.py): each rule is scored from the two
readings of every crop, and a rule that costs the sharp or detector-framed crops a right read
is not chosen however much it wins on blurred ones."""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.config.schema import RecognizerConfig  # noqa: E402
from agent.vision.deblur import DeblurRule, MotionBlur, TiltedBlur  # noqa: E402
from agent.vision.ocr import PlateText  # noqa: E402
from tools.deblur_rule import UNSURE_ONLY, Reading, choose, score  # noqa: E402


def _text(text: str, confidence: float, fmt: str | None = "us.LLL-DDDD") -> PlateText:
    return PlateText(text, confidence, [confidence] * len(text), [(text, confidence)], fmt)


def _reading(first: PlateText, again: PlateText, length: int, depth: float,
             truth: str = "ABC1234", tilted: PlateText | None = None,
             tilt: TiltedBlur = TiltedBlur(length=1, angle=0.0)) -> Reading:
    return Reading(truth, first, again, MotionBlur(length, depth), tilted or first, tilt)


def test_a_sure_wrong_reading_of_a_blurred_crop_is_replaced_only_where_the_blur_is_seen():
    smeared = _reading(_text("ABC1254", 0.8), _text("ABC1234", 0.5), 9, 2.0)
    cut = RecognizerConfig()
    assert score(UNSURE_ONLY, [smeared], cut) == {"right": 0, "wrong": 1, "second_readings": 1}
    assert score(DeblurRule(), [smeared], cut) == {"right": 1, "wrong": 0, "second_readings": 1}
    sure = _reading(_text("ABC1234", 0.99), _text("ABC1284", 0.9), 4, 0.1)
    assert score(DeblurRule(), [sure], cut) == {"right": 1, "wrong": 0, "second_readings": 0}


def test_a_rule_that_costs_a_sharp_crop_is_not_chosen():
    # Sharp crop whose valley is at 5 px: a rule that sees blur from 5 px swaps its right
    # reading for a wrong one; blurred crops' valleys are at 8 px.
    sharp = _reading(_text("ABC1234", 0.95), _text("ABC1284", 0.9), 5, 1.5)
    blurred = _reading(_text("ABC1254", 0.8), _text("ABC1234", 0.6), 8, 1.5)
    sets = {"blur_0": [sharp], "blur_3": [blurred], "blur_5": [blurred], "blur_7": [blurred],
            "blur_9": [blurred], "framed": [sharp], "passes": [sharp]}
    report = choose(sets, RecognizerConfig())
    chosen = report["chosen"]["rule"]
    assert chosen["seen_length"] in (6, 7, 8) and chosen["seen_max_length"] >= 8
    assert report["chosen"]["sets"]["blur_0"]["right"] == 1
    assert report["chosen"]["blurred_right"] == 4


def test_the_tilted_stage_counts_only_a_sure_reading_of_a_crop_still_unsure():
    cut = RecognizerConfig()
    still_unsure = _reading(_text("ABC1254", 0.3), _text("ABC1254", 0.3), 4, 0.1,
                            tilted=_text("ABC1234", 0.99), tilt=TiltedBlur(14, 20.0))
    assert score(DeblurRule(), [still_unsure], cut)["right"] == 1
    not_sure_enough = _reading(_text("ABC1254", 0.3), _text("ABC1254", 0.3), 4, 0.1,
                               tilted=_text("ABC1234", 0.9), tilt=TiltedBlur(14, 20.0))
    assert score(DeblurRule(), [not_sure_enough], cut)["right"] == 0
    horizontal = _reading(_text("ABC1254", 0.3), _text("ABC1254", 0.3), 4, 0.1,
                          tilted=_text("ABC1234", 0.99), tilt=TiltedBlur(14, 0.0))
    assert score(DeblurRule(), [horizontal], cut)["right"] == 0
