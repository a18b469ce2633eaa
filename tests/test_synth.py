"""The synthetic plate generator: deterministic per seed, formats that the post-processing
accepts, and a contact sheet a human can look at."""
from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.vision.crops import OCR_INPUT_HEIGHT, OCR_INPUT_WIDTH  # noqa: E402
from agent.vision.ocr import resolve  # noqa: E402
from agent.vision.plate_formats import (CHARSET, FORMATS, letters_read_as_digits,  # noqa: E402
                                        matching_format, normalise_text, us_state)
from ctc_probs import one_hot_probs  # noqa: E402
from tools.synth import generate as gen  # noqa: E402
from tools.synth.text import random_from_format  # noqa: E402


def test_same_seed_same_samples():
    a = gen.make_sample(5, 17)
    b = gen.make_sample(5, 17)
    assert a.text == b.text
    assert np.array_equal(a.image, b.image)
    assert a.image.shape == (OCR_INPUT_HEIGHT, OCR_INPUT_WIDTH)
    assert a.image.dtype == np.uint8
    c = gen.make_sample(6, 17)
    assert not np.array_equal(a.image, c.image)


def test_generate_is_independent_of_chunking():
    imgs, texts = gen.generate(12, seed=3)
    tail_imgs, tail_texts = gen.generate(4, seed=3, start=8)
    assert texts[8:] == tail_texts
    assert np.array_equal(imgs[8:], tail_imgs)


@pytest.mark.parametrize("fmt", [f for f in FORMATS if f.strict], ids=lambda f: f.name)
def test_formats_round_trip_through_post_processing(fmt):
    rng = np.random.default_rng([11, len(fmt.name)])
    for _ in range(20):
        text, display = random_from_format(fmt, rng)
        assert normalise_text(display) == text
        assert fmt.matches(text)
        assert matching_format(text, fmt.region) is not None
        read = resolve(one_hot_probs(text), fmt.region)
        assert read.text == text
        assert read.format is not None
        assert read.format.split(".")[0] == fmt.region.lower()


def test_vanity_text_is_never_corrected():
    """A confident vanity reading stays as read, even if swapping a glyph would fit a format."""
    read = resolve(one_hot_probs("B0SS"), "US")
    assert read.text == "B0SS"


def test_confusable_glyph_resolved_by_format():
    """Brazil old plates are LLL-DDDD: an unsure 0/O in a digit slot becomes the digit."""
    probs = one_hot_probs("ABC12O4")
    col = 1 + 5 * 3  # sixth character's first column (2 columns + 1 blank per character)
    for c in (col, col + 1):
        probs[c] = 0
        probs[c, CHARSET.index("O") + 1] = 0.6
        probs[c, CHARSET.index("0") + 1] = 0.4
    read = resolve(probs, "BR")
    assert read.text == "ABC1204"
    assert read.format == "br.old"
    assert "ABC12O4" in [t for t, _ in read.candidates]


def test_exhaustive_region_reads_a_sure_bar_as_the_digit_its_position_needs():
    """Brazil's table lists every car layout, and the grey plates draw I and 1 alike: a bar the
    model is sure is an I, in a digit position, is a 1 there. The same probabilities with a US
    or no hint stay as read (a vanity plate could say that)."""
    probs = one_hot_probs("AXO79I6")
    read = resolve(probs, "BR")
    assert read.text == "AXO7916"
    assert read.format == "br.old"
    assert read.candidates[0][0] == "AXO7916"
    assert "AXO79I6" in [t for t, _ in read.candidates]
    assert resolve(probs, "US").text == "AXO79I6"
    assert resolve(probs, None).text == "AXO79I6"


def test_exhaustive_layout_reports_the_glyph_confidence_given_its_class():
    """In Brazil the layout says the bar in a digit position is a digit: the swapped 1 reports
    how sure the model is of it among the digits, so a correct read is not dropped under the
    agent's cut; where the column gives the digits no mass, the confidence stays low."""
    probs = one_hot_probs("AXO79I6")
    cols = slice(16, 18)  # the I's two columns (character 5: 1 + 3 * 5, two columns, a blank)
    probs[cols, CHARSET.index("I") + 1] = 0.98
    probs[cols, CHARSET.index("1") + 1] = 0.02
    read = resolve(probs, "BR")
    assert read.text == "AXO7916"
    assert read.char_confidences[5] == pytest.approx(1.0) and read.confidence > 0.9
    bare = one_hot_probs("AXO79I6")  # no mass on any digit there
    read = resolve(bare, "BR")
    assert read.text == "AXO7916" and read.confidence < 0.01


def test_exhaustive_region_keeps_a_reading_that_no_layout_can_fit():
    """Fitting a format only reorders readings: a short read with no variant that fits is
    still reported, with no format named, rather than dropped."""
    read = resolve(one_hot_probs("AB12"), "BR")
    assert read.text == "AB12"
    assert read.format is None


def test_state_without_letter_o_reads_every_round_glyph_as_zero():
    """Florida issues no letter O: a vanity word the model read with O is the zero its records
    hold. A state that issues both (California), a bare US hint, and Argentina (``ar`` is not
    Arkansas) keep the model's O."""
    probs = one_hot_probs("CUSTOM")
    read = resolve(probs, "US-FL")
    assert read.text == "CUST0M"
    assert all(c > 0.99 for c in read.char_confidences)
    assert all("O" not in t for t, _ in read.candidates)
    assert resolve(probs, "fl").text == "CUST0M"
    for keeps in ("US-CA", "US", "ar", None):
        assert resolve(probs, keeps).text == "CUSTOM", keeps


def test_us_state_hints():
    assert us_state("US-FL") == "FL" and us_state("fl") == "FL" and us_state("us-ar") == "AR"
    assert us_state("ar") is None and us_state("BR") is None and us_state("US-XX") is None
    assert letters_read_as_digits("US-ID") == {"O": "0"}
    assert letters_read_as_digits("US-NY") == {} and letters_read_as_digits(None) == {}


def test_contact_sheet_written(tmp_path):
    sheet = tmp_path / "sheet.png"
    assert gen.main(["--count", "16", "--seed", "4", "--sheet", str(sheet)]) == 0
    img = cv2.imread(str(sheet))
    assert img is not None and img.shape[0] > OCR_INPUT_HEIGHT and img.shape[1] > 4 * OCR_INPUT_WIDTH


def test_npz_written(tmp_path):
    out = tmp_path / "s.npz"
    assert gen.main(["--count", "8", "--seed", "4", "--out", str(out)]) == 0
    data = np.load(out)
    assert data["images"].shape == (8, OCR_INPUT_HEIGHT, OCR_INPUT_WIDTH)
    assert len(data["texts"]) == 8


@pytest.mark.integration
def test_demo_clip_deterministic(tmp_path):
    from tools.synth.make_clip import make_clip
    a = make_clip(tmp_path / "a.mp4", seed=3, seconds=3)
    b = make_clip(tmp_path / "b.mp4", seed=3, seconds=3)
    assert [p["text"] for p in a["plates"]] == [p["text"] for p in b["plates"]]
    assert (tmp_path / "a.mp4").stat().st_size > 1000
    assert (tmp_path / "a.mp4.json").exists()
    cap = cv2.VideoCapture(str(tmp_path / "a.mp4"))
    ok, frame = cap.read()
    cap.release()
    assert ok and frame.shape == (360, 640, 3)


def test_stroke_weight_thickens_and_thins_the_lettering():
    from tools.synth.render import font_sets, text_mask
    font = font_sets()["us"][0]
    ink = {w: float(text_mask("ABC1234", font, weight=w).sum()) for w in (-2, 0, 3)}
    assert ink[-2] < ink[0] < ink[3]


def test_tight_crop_lets_the_lettering_reach_the_edges(monkeypatch):
    """A crop cut to the serial leaves at most a sliver of plate beside the characters."""
    from tools.synth import degrade as deg
    plate = np.ones((120, 360, 3), np.float32)
    plate[30:90, 40:320] = 0.0  # the "serial": a dark block from 11% to 89% of the width
    monkeypatch.setattr(deg, "TIGHT_CROP_SHARE", 1.0)
    monkeypatch.setattr(deg, "LOOSE_CROP_SHARE", 0.0)
    for seed in range(20):
        img = deg.degrade(np.random.default_rng(seed), plate, OCR_INPUT_WIDTH,
                          OCR_INPUT_HEIGHT, hard=0.0, text_span=(40 / 360, 320 / 360))
        dark = np.nonzero(img[OCR_INPUT_HEIGHT // 2] < 100)[0]
        assert (dark[-1] - dark[0] + 1) / OCR_INPUT_WIDTH >= 0.9, seed


def test_loose_crop_takes_in_the_car_around_the_plate(monkeypatch):
    """A loose crop leaves the plate a smaller part of the picture than the usual margin does."""
    from tools.synth import degrade as deg
    plate = np.ones((120, 360, 3), np.float32)
    plate[30:90, 40:320] = 0.0

    def median_white_share(share: float) -> float:
        monkeypatch.setattr(deg, "LOOSE_CROP_SHARE", share)
        return float(np.median([
            (deg.degrade(np.random.default_rng(seed), plate, OCR_INPUT_WIDTH,
                         OCR_INPUT_HEIGHT, hard=0.0) >= 240).mean() for seed in range(20)]))

    assert median_white_share(1.0) < 0.25 < 0.3 < median_white_share(0.0)


def test_us_picture_beside_the_serial_makes_room(monkeypatch):
    """With a picture beside it, the serial leaves at least half its height free on one side
    (inside the plate's margin) for the picture, and the picture leaves ink there."""
    from tools.synth import render
    monkeypatch.setattr(render, "US_EMBLEM_SHARE", 1.0)
    for seed in range(20):
        plate = render.render_us(np.random.default_rng(seed), "ABC1234", "ABC 1234")
        h, w = plate.image.shape[:2]
        tx, ty, tw, th = plate.text_box
        margin = int(w * 0.04)
        free_left, free_right = tx - margin, w - margin - (tx + tw)
        assert max(free_left, free_right) >= th // 2, seed
        side = (plate.image[ty:ty + th, margin:tx] if free_left > free_right
                else plate.image[ty:ty + th, tx + tw:w - margin])
        assert side.std() > 0.05, seed


def test_digits_drawn_in_the_letter_shape_their_lettering_shares(monkeypatch):
    """Where a plate's lettering draws 1 as a bare bar (or 0 as O), the generator draws the
    font's letter in its place and the label keeps the digit; a font whose I has serifs cannot
    stand in for a bare 1."""
    from tools.synth import render
    monkeypatch.setitem(render.SHARED_SHAPES, "br_old", (("1", "I", 1.0),))
    monkeypatch.setitem(render.SHARED_SHAPES, "us", (("1", "I", 0.0), ("0", "O", 1.0)))
    fonts = {Path(f).name: f for f in render.font_sets()["us"] + render.font_sets()["br_old"]}
    bare, serifed = fonts["DejaVuSansCondensed-Bold.ttf"], fonts["LiberationMono-Bold.ttf"]
    assert render.has_plain_capital_i(bare) and not render.has_plain_capital_i(serifed)
    rng = np.random.default_rng(0)
    assert render.shared_shapes(rng, "ABC-1210", bare, "br_old") == "ABC-I2I0"
    assert render.shared_shapes(rng, "ABC-1210", serifed, "br_old") == "ABC-1210"
    assert render.shared_shapes(rng, "ABC-1210", serifed, "us") == "ABC-121O"
    assert render.shared_shapes(rng, "ABC-1210", bare, "eu") == "ABC-1210"
    plate = render.render_plate(np.random.default_rng(3), "ABC1211", "ABC-1211", "BR", "br.old")
    assert plate.text == "ABC1211"
