"""US serial tables (issue 20): every state and DC has its layouts, the generator draws them in
proportion to registrations, a state hint names the home layout, and the confusions a format
can decide (A/4) are decided while the others (W/M, V/U, M/H) reach top-5."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.vision.ocr import resolve  # noqa: E402
from agent.vision.plate_formats import (CHARSET, FORMATS, US_REGISTRATIONS_M,  # noqa: E402
                                        US_STATE_CODES, US_STATE_SERIALS, formats_for,
                                        matching_format)
from ctc_probs import one_hot_probs  # noqa: E402
from tools.synth.text import choose_format, random_from_format  # noqa: E402


def _doubt(probs: np.ndarray, text: str, position: int, other: str, p_other: float
           ) -> np.ndarray:
    """Move ``p_other`` of the mass of the ``position``-th character of a one-hot reading
    (``one_hot_probs`` layout: two columns per character, one blank between) to ``other``."""
    probs = probs.copy()
    for col in (1 + 3 * position, 2 + 3 * position):
        probs[col, CHARSET.index(text[position]) + 1] = 1.0 - p_other
        probs[col, CHARSET.index(other) + 1] = p_other
    return probs


def test_every_state_and_dc_has_serials_and_registrations():
    assert set(US_STATE_SERIALS) == set(US_STATE_CODES)
    assert set(US_REGISTRATIONS_M) == set(US_STATE_CODES)
    for state, serials in US_STATE_SERIALS.items():
        assert serials, state
        for s in serials:
            assert 5 <= sum(c in "LDA" for c in s.display) <= 8, (state, s.display)


@pytest.mark.parametrize("text,state", [
    ("AB1C2D", "MO"),    # letter-letter-digit-letter-digit-letter (issue 20)
    ("AB12345", "IL"),   # two letters then five digits
    ("1ABC234", "CA"), ("ABC1234", "TX"), ("1AB2345", "MD"), ("A12BCD", "NJ"),
    ("ABC12D", "AR"), ("ABCD12", "FL"), ("1234567", "NH"), ("123456", "DE"),
])
def test_current_state_layouts_are_strict_formats(text, state):
    fmt = matching_format(text, f"US-{state}")
    assert fmt is not None and state in fmt.states, (text, fmt)


def test_generator_draws_in_proportion_to_registrations():
    """Texas (23 M vehicles, ABC-1234) and California (30 M, 1ABC234) dominate; Missouri's
    AB1-C2D (5.5 M) is drawn about as often as its registrations say."""
    rng = np.random.default_rng(0)
    us = [f for f in FORMATS if f.region == "US" and f.strict]
    drawn = [choose_format(rng, "US") for _ in range(20000)]
    share = {f.name: sum(d is f for d in drawn) / len(drawn) for f in us}
    total = sum(f.weight for f in us) + 3.0  # plus vanity
    mo = next(f for f in us if "MO" in f.states)
    assert abs(share[mo.name] - mo.weight / total) < 0.005
    ca = next(f for f in us if f.states == ("CA",))
    assert share[ca.name] > 4 * share[mo.name]


def test_state_hint_names_the_home_layout_first():
    assert "MO" in formats_for("US-MO")[0].states
    assert {f.region for f in formats_for("US-MO")} == {"US"}  # other states' cars still fit


def test_a_and_4_are_decided_by_the_layout():
    """Missouri AB1-C2D: an A the model half-saw in the digit slot is a 4."""
    text = "AB1CAD"  # the A in position 4 should be a digit
    probs = _doubt(one_hot_probs(text), text, 4, "4", 0.3)
    read = resolve(probs, "US-MO")
    assert read.text == "AB1C4D"
    assert read.format is not None


def test_a_doubtful_u_stays_a_u_in_arizona_because_other_states_issue_u():
    """Arizona issues no U, but a unit there reads other states' cars: the layout of another
    state still fits, so the U stays and its V twin is the runner-up."""
    text = "ABU1234"
    probs = _doubt(one_hot_probs(text), text, 2, "V", 0.3)
    read = resolve(probs, "US-AZ")
    assert read.text == text
    assert [t for t, _ in read.candidates][1] == "ABV1234"


@pytest.mark.parametrize("glyph,twin", [("W", "M"), ("M", "H"), ("V", "U")])
def test_letter_twins_reach_top5_even_when_the_model_gave_them_nothing(glyph, twin):
    """An unsure W (int8 rounded the M column to 0) still brings its M twin into top-5."""
    text = f"AB{glyph}1234"
    probs = one_hot_probs(text)
    for col in (7, 8):
        probs[col, CHARSET.index(glyph) + 1] = 0.6
        probs[col, 0] = 0.4
    read = resolve(probs, "US")
    assert read.text == text
    assert f"AB{twin}1234" in [t for t, _ in read.candidates]


def test_sure_glyphs_get_no_twin():
    read = resolve(one_hot_probs("ABW1234"), "US")
    assert "ABM1234" not in [t for t, _ in read.candidates]


def test_generated_us_text_fits_its_format():
    rng = np.random.default_rng(3)
    for fmt in (f for f in FORMATS if f.region == "US" and f.strict):
        text, display = random_from_format(fmt, rng)
        assert fmt.matches(text), (fmt.name, text, display)


def test_format_lookups_agree_with_the_rule():
    """``allows``/``matches`` answer from per-position sets (speed); they must say exactly what
    the rule says, for every format, position and character (leading zeros included)."""
    from agent.vision.plate_formats import CHARSET, FORMATS

    for fmt in FORMATS:
        for i in range(len(fmt.pattern)):
            for ch in CHARSET + "-a ":
                assert fmt.allows(i, ch) == fmt._rule_allows(i, ch), (fmt.name, i, ch)
        sample = "".join(sorted(fmt._allowed[i])[-1] for i in range(len(fmt.pattern)))
        assert fmt.matches(sample)
        assert not fmt.matches(sample + "1") and not fmt.matches(sample[:-1])
        assert fmt.matches("0" + sample[1:]) == fmt._rule_allows(0, "0")


def test_formats_by_length_keeps_table_order():
    """resolve() looks only at formats of the reading's length; within a length the table's
    order (the home state's layouts first) must be kept, since the first match names the read."""
    from agent.vision.ocr import _formats_by_length
    from agent.vision.plate_formats import formats_for

    for region in (None, "US", "US-MO", "ca", "BR", "EU", "GB", "AR"):
        strict, free = _formats_by_length(region)
        for flag, grouped in ((True, strict), (False, free)):
            want = [f for f in formats_for(region) if f.strict == flag]
            assert sum(map(len, grouped.values())) == len(want)
            for n, fs in grouped.items():
                assert list(fs) == [f for f in want if len(f.pattern) == n]


def _fit_by_rule(text: str, fmt) -> str | None:
    """The glyph-swapping rule spelled out (what resolve() did before the lookup tables)."""
    from agent.vision.plate_formats import (CONFUSABLE_DIGIT_TO_LETTER,
                                            CONFUSABLE_LETTER_TO_DIGIT, LETTER_TWINS)
    if len(text) != len(fmt.pattern):
        return None
    out = []
    for i, ch in enumerate(text):
        if fmt._rule_allows(i, ch):
            out.append(ch)
            continue
        twins = [CONFUSABLE_LETTER_TO_DIGIT.get(ch) or CONFUSABLE_DIGIT_TO_LETTER.get(ch)]
        twins += LETTER_TWINS.get(ch, ())
        alt = next((t for t in twins if t is not None and fmt._rule_allows(i, t)), None)
        if alt is None:
            return None
        out.append(alt)
    return "".join(out)


def test_fit_agrees_with_the_swapping_rule():
    """fit() (per-position tables) swaps exactly the glyphs the rule swaps, on random readings
    of every length, for every format; and matches() agrees with fit() leaving text as is."""
    import random

    from agent.vision.plate_formats import CHARSET, FORMATS

    rng = random.Random(20)
    texts = ["".join(rng.choice(CHARSET) for _ in range(rng.randint(5, 8))) for _ in range(400)]
    texts += ["0ZU5764", "OZU5764", "8ABC123", "1ABC234", "AB12345", "MWV1234"]
    for fmt in FORMATS:
        for text in texts:
            assert fmt.fit(text) == _fit_by_rule(text, fmt), (fmt.name, text)
            assert fmt.matches(text) == (fmt.fit(text) == text), (fmt.name, text)
