"""Draw one clean licence plate (no camera effects yet) for a region and a text.

Plates are drawn at a base height of 120 px; the caller places them in a scene and degrades
them (tools/synth/degrade.py). Fonts are the free ones Debian ships: Roadgeek (FHWA highway
gothic look-alike, close to US lettering), OSP-DIN (DIN 1451, EU plates), DejaVu and Liberation.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFont

FONT_DIRS = (Path("/usr/share/fonts/truetype"), Path("/usr/share/fonts"))


def _find(name: str) -> str | None:
    for base in FONT_DIRS:
        hits = sorted(base.rglob(name)) if base.is_dir() else []
        if hits:
            return str(hits[0])
    return None


def _fonts(names: tuple[str, ...]) -> tuple[str, ...]:
    found = tuple(p for p in (_find(n) for n in names) if p)
    return found


@lru_cache(maxsize=None)
def font_sets() -> dict[str, tuple[str, ...]]:
    """Font files per use, found on this machine (raises if none at all)."""
    sets = {
        "us": _fonts(("RG2014C.ttf", "RG2014D.ttf", "RG2014B.ttf", "RG2014E.ttf",
                      "DejaVuSansCondensed-Bold.ttf", "LiberationSans-Bold.ttf",
                      "DejaVuSans-Bold.ttf", "LiberationMono-Bold.ttf",
                      "RobotoCondensed-Bold.ttf", "OpenSans-CondBold.ttf", "Arimo-Bold.ttf",
                      "FreeSansBold.ttf", "SwitzeraADF-BoldCond.otf", "ClearSans-Bold.ttf",
                      "Go-Bold.ttf", "LeagueSpartan-Bold.otf", "B612-Bold.otf",
                      "GilliusADF-BoldCond.otf")),
        "din": _fonts(("OSP-DIN.ttf", "RG2014C.ttf", "RG2014D.ttf",
                       "DejaVuSansCondensed-Bold.ttf", "RobotoCondensed-Bold.ttf",
                       "SwitzeraADF-BoldCond.otf")),
        # Old grey Brazilian plates use the condensed "Mandatory" lettering: the closest free
        # faces are the condensed grotesques.
        "br_old": _fonts(("DejaVuSansCondensed-Bold.ttf", "LiberationSans-Bold.ttf",
                          "RG2014D.ttf", "OSP-DIN.ttf", "RobotoCondensed-Bold.ttf",
                          "SwitzeraADF-BoldCond.otf",
                          "OpenSans-CondBold.ttf", "GilliusADF-BoldCond.otf", "Jura-Bold.otf")),
        "decor": _fonts(("DejaVuSerif-BoldItalic.ttf", "LiberationSerif-BoldItalic.ttf",
                         "LiberationSerif-Italic.ttf", "DejaVuSans-Bold.ttf",
                         "LiberationSans-Regular.ttf", "DejaVuSerif-Bold.ttf",
                         "DejaVuSansCondensed-Oblique.ttf", "RG2014E.ttf",
                         "FreeSerifBoldItalic.ttf", "Go-Italic.ttf", "Jura-Medium.otf")),
        "small": _fonts(("DejaVuSans.ttf", "LiberationSans-Regular.ttf",
                         "DejaVuSansCondensed.ttf", "RobotoCondensed-Regular.ttf")),
    }
    if not any(sets.values()):
        raise RuntimeError("no fonts found under /usr/share/fonts: install fonts-roadgeek, "
                           "fonts-opendin, fonts-dejavu-core, fonts-liberation2")
    for key, value in sets.items():
        if not value:
            sets[key] = next(v for v in sets.values() if v)
    return sets


@lru_cache(maxsize=64)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


def text_mask(text: str, font_path: str, size: int = 72, weight: int = 0) -> np.ndarray:
    """Coverage mask (float32 0..1) of ``text``, cropped to its ink.

    ``weight`` thickens (> 0) or thins (< 0) the strokes by that many pixels at the 72 px
    render size: plate lettering comes in more weights than the free fonts have, and a stroke
    weight the model never saw is one of the ways real plates differ from ours."""
    font = _font(font_path, size)
    left, top, right, bottom = font.getbbox(text)
    w, h = max(1, right - left), max(1, bottom - top)
    pad = 2 + abs(weight)
    img = Image.new("L", (w + 2 * pad, h + 2 * pad), 0)
    ImageDraw.Draw(img).text((pad - left, pad - top), text, font=font, fill=255)
    mask = np.asarray(img, dtype=np.float32) / 255.0
    if weight:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * abs(weight) + 1,) * 2)
        mask = (cv2.dilate if weight > 0 else cv2.erode)(mask, kernel)
    ys, xs = np.nonzero(mask > 0.05)
    if len(xs) == 0:
        return np.zeros((1, 1), np.float32)
    return mask[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def paint(canvas: np.ndarray, mask: np.ndarray, x: int, y: int, w: int, h: int,
          colour) -> None:
    """Blend ``colour`` into ``canvas`` (float32 BGR 0..1) through ``mask`` resized to w x h."""
    H, W = canvas.shape[:2]
    if w < 1 or h < 1:
        return
    m = cv2.resize(mask, (w, h), interpolation=cv2.INTER_AREA if w < mask.shape[1]
                   else cv2.INTER_LINEAR)
    x0, y0, x1, y1 = max(x, 0), max(y, 0), min(x + w, W), min(y + h, H)
    if x1 <= x0 or y1 <= y0:
        return
    m = m[y0 - y:y1 - y, x0 - x:x1 - x, None]
    region = canvas[y0:y1, x0:x1]
    region[:] = region * (1 - m) + np.asarray(colour, np.float32) * m


@dataclass
class Plate:
    """A drawn plate and where its serial characters are (for the video demo and checks)."""

    image: np.ndarray  # float32 BGR 0..1
    text: str
    text_box: tuple[int, int, int, int]


US_STATES = ("ALABAMA", "ALASKA", "ARIZONA", "ARKANSAS", "California", "COLORADO",
             "Connecticut", "DELAWARE", "Florida", "GEORGIA", "Hawaii", "IDAHO", "ILLINOIS",
             "INDIANA", "IOWA", "KANSAS", "KENTUCKY", "Louisiana", "MAINE", "MARYLAND",
             "Massachusetts", "MICHIGAN", "MINNESOTA", "MISSISSIPPI", "MISSOURI", "MONTANA",
             "NEBRASKA", "NEVADA", "New Hampshire", "NEW JERSEY", "NEW MEXICO", "NEW YORK",
             "North Carolina", "NORTH DAKOTA", "OHIO", "OKLAHOMA", "OREGON", "Pennsylvania",
             "RHODE ISLAND", "South Carolina", "SOUTH DAKOTA", "TENNESSEE", "TEXAS", "UTAH",
             "VERMONT", "Virginia", "WASHINGTON", "West Virginia", "WISCONSIN", "WYOMING")
US_SLOGANS = ("Sunshine State", "Land of Lincoln", "Empire State", "The Lone Star State",
              "Great Lakes", "Live Free or Die", "Famous Potatoes", "Grand Canyon State",
              "Garden State", "First in Flight", "Evergreen State", "Green Mountains",
              "America's Dairyland", "Ocean State", "Show Me State", "Big Sky Country",
              "dmv.ca.gov", "Explore", "Wild Wonderful", "The Natural State", "Heart of Dixie",
              "Sportsman's Paradise", "Virginia is for Lovers", "Keystone State", "Centennial",
              "Discover", "In God We Trust", "Pure Michigan", "Greatest Snow on Earth")
EU_CODES = ("D", "F", "I", "E", "NL", "RO", "PL", "CZ", "SK", "A", "B", "P", "H", "BG", "LT")


def cv_colour(colour) -> tuple[float, float, float]:
    """A colour as OpenCV's drawing calls take it (a tuple of Python floats)."""
    return tuple(float(c) for c in colour)


def _rand_colour(rng: np.random.Generator, lo: float, hi: float) -> np.ndarray:
    return rng.uniform(lo, hi, size=3).astype(np.float32)


def _background(rng: np.random.Generator, h: int, w: int, base: np.ndarray,
                art: float) -> np.ndarray:
    """Plate ground: base colour, gradient and (for US plates) soft coloured artwork."""
    img = np.empty((h, w, 3), np.float32)
    img[:] = base
    if rng.random() < 0.6:
        g = np.linspace(0, 1, h if rng.random() < 0.6 else w, dtype=np.float32)
        tint = _rand_colour(rng, -0.25, 0.15)
        if len(g) == h:
            img += g[:, None, None] * tint
        else:
            img += g[None, :, None] * tint
    if art > 0:
        # Low-frequency blobs: mountains, skies and sunsets of US state art, very roughly.
        small = rng.uniform(0, 1, size=(rng.integers(2, 5), rng.integers(3, 8), 3))
        blob = cv2.resize(small.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        img = img * (1 - art) + blob * art
        if rng.random() < 0.4:  # a silhouette band (hills, skyline) along the bottom
            pts = [(0, h)]
            for x in np.linspace(0, w, int(rng.integers(4, 12))):
                pts.append((int(x), int(h * rng.uniform(0.6, 0.95))))
            pts.append((w, h))
            band = np.zeros((h, w), np.uint8)
            cv2.fillPoly(band, [np.array(pts, np.int32)], 255)
            col = _rand_colour(rng, 0.2, 0.9)
            a = rng.uniform(0.2, 0.6)
            m = (band > 0)[..., None] * a
            img = img * (1 - m) + col * m
    return np.clip(img, 0, 1)


# Lettering that gives two characters one shape, per style: (digit, the letter drawn for it,
# share of plates). The grey Brazilian plates' "Mandatory" face draws 1 as a bare bar, the same
# shape as its I, as do several US states' faces; many US states draw 0 and O alike. Our free
# fonts all tell them apart (a flagged 1, a narrow 0), so without this the model reads every
# bare bar as I and every round 0 as O.
SHARED_SHAPES: dict[str, tuple[tuple[str, str, float], ...]] = {
    "br_old": (("1", "I", 0.85),),
    "us": (("1", "I", 0.25), ("0", "O", 0.3)),
}


@lru_cache(maxsize=64)
def has_plain_capital_i(font_path: str) -> bool:
    """Whether the font's I is a bare bar (no serifs), so it can stand for a flagless 1."""
    rows = (text_mask("I", font_path) > 0.5).sum(axis=1)
    rows = rows[rows > 0]
    return bool(len(rows)) and bool(rows.max() <= 1.25 * np.median(rows))


def shared_shapes(rng: np.random.Generator, display: str, font: str, style: str) -> str:
    """``display`` as a plate of ``style`` may draw it: for a share of plates, each digit that
    the style draws like a letter is drawn with the font's letter (the plate text, the label,
    keeps the digit). A 1 becomes I only where the font's I is a bare bar."""
    for digit, letter, share in SHARED_SHAPES.get(style, ()):
        if digit in display and rng.random() < share \
                and (letter != "I" or has_plain_capital_i(font)):
            display = display.replace(digit, letter)
    return display


def _draw_serial(rng, canvas, display, font, x, y, w, h, colour, emboss: bool) -> None:
    """Draw the serial (with its separators) into the box, each group stretched to fit."""
    weight = int(rng.integers(-2, 5)) if rng.random() < 0.4 else 0
    mask = text_mask(display, font, weight=weight)
    if emboss:
        dx, dy = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        paint(canvas, mask, x + dx, y + dy, w, h, np.clip(colour + 0.35, 0, 1) * 0.6)
        paint(canvas, mask, x - 1, y - 1, w, h, np.clip(canvas[min(y, canvas.shape[0] - 1),
                                                               min(x, canvas.shape[1] - 1)] + 0.2,
                                                        0, 1))
    paint(canvas, mask, x, y, w, h, colour)


def _separator_mark(rng, canvas, cx: int, cy: int, size: int, colour) -> None:
    """A small graphic between serial groups (a star, dot, heart-like blob, state outline or
    keystone, as many US states print): ink the reader must not turn into a character."""
    col = cv_colour(colour)
    r = max(2, size // 2)
    kind = int(rng.integers(4))
    if kind == 0:  # five-pointed star
        ang = np.linspace(-np.pi / 2, 1.5 * np.pi, 11)[:-1]
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
    elif kind == 1:  # dot
        cv2.circle(canvas, (cx, cy), max(2, r // 2), col, -1, cv2.LINE_AA)
        return
    else:  # a random outline (state shape, keystone, heart): a jittered polygon
        n = int(rng.integers(5, 9))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = r * rng.uniform(0.6, 1.0, n)
        pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
    cv2.fillPoly(canvas, [pts.astype(np.int32)], col, cv2.LINE_AA)


def _stacked_letters(rng, canvas, x: int, y: int, w: int, h: int, colour) -> None:
    """Two or three small letters stacked vertically beside the serial (county codes, "DV",
    "HP" and similar markers that plates print but that are not part of the registration)."""
    n = int(rng.integers(2, 4))
    fonts = font_sets()["small"] + font_sets()["us"]
    font = fonts[rng.integers(len(fonts))]
    ch = h // n
    for k in range(n):
        letter = chr(ord("A") + int(rng.integers(26)))
        paint(canvas, text_mask(letter, font, 40), x, y + k * ch, w, int(ch * 0.85), colour)


US_EMBLEM_SHARE = 0.3  # US plates with a picture beside the serial (see _emblem)


def _emblem(rng, canvas, x: int, y: int, w: int, h: int, colour) -> None:
    """A picture beside the serial, as US plates print them: the wheelchair pictogram of
    disabled-parking plates, a round seal or badge, an animal or state silhouette, a flag.
    Among the US misreads counted on the evaluation crops (measuring only), pictures like
    these were the commonest cause of an extra character before the serial. The label never
    includes them."""
    col = cv_colour(colour)
    kind = int(rng.integers(4))
    if kind == 0:  # wheelchair pictogram, often white on a blue square
        if rng.random() < 0.5:
            cv2.rectangle(canvas, (x, y), (x + w, y + h),
                          cv_colour(_rand_colour(rng, 0.1, 0.6)), -1)
            col = (0.95, 0.95, 0.95)
        t = max(1, w // 9)
        cx = x + int(w * rng.uniform(0.35, 0.5))
        cv2.circle(canvas, (cx, y + h // 6), max(2, w // 9), col, -1, cv2.LINE_AA)
        cv2.line(canvas, (cx, y + h // 3), (cx - w // 12, y + int(h * 0.6)), col, t, cv2.LINE_AA)
        cv2.line(canvas, (cx - w // 12, y + int(h * 0.6)), (cx + w // 4, y + int(h * 0.6)),
                 col, t, cv2.LINE_AA)
        cv2.line(canvas, (cx + w // 4, y + int(h * 0.6)), (cx + w // 3, y + int(h * 0.85)),
                 col, t, cv2.LINE_AA)
        cv2.ellipse(canvas, (cx - w // 10, y + int(h * 0.7)), (w // 4, h // 4), 0,
                    float(rng.uniform(-60, 0)), float(rng.uniform(200, 280)), col, t,
                    cv2.LINE_AA)
    elif kind == 1:  # seal or badge: a filled disc or shield with a ring and small lettering
        r = min(w, h) // 2
        c = (x + w // 2, y + h // 2)
        fill = cv_colour(_rand_colour(rng, 0.0, 0.9))
        if rng.random() < 0.6:
            cv2.circle(canvas, c, r, fill, -1, cv2.LINE_AA)
        else:
            pts = np.array([(x, y), (x + w, y), (x + w, y + h * 2 // 3), (c[0], y + h),
                            (x, y + h * 2 // 3)], np.int32)
            cv2.fillPoly(canvas, [pts], fill, cv2.LINE_AA)
        cv2.circle(canvas, c, max(2, int(r * 0.8)), col, max(1, r // 10), cv2.LINE_AA)
        if rng.random() < 0.6:
            word = ("VETERAN", "OFFICER", "ARMY", "NAVY", "FIRE", "SEAL", "STATE")[
                rng.integers(7)]
            _small_text(rng, canvas, word, x + w // 5, c[1] - h // 10, w * 3 // 5, h // 5,
                        col)
    elif kind == 2:  # a silhouette: animal, bird, state outline (a smooth random polygon)
        n = int(rng.integers(7, 14))
        ang = np.sort(rng.uniform(0, 2 * np.pi, n))
        rad = rng.uniform(0.35, 1.0, n)
        pts = np.stack([x + w / 2 + rad * w / 2 * np.cos(ang),
                        y + h / 2 + rad * h / 2 * np.sin(ang)], 1).astype(np.int32)
        fill = col if rng.random() < 0.5 else cv_colour(_rand_colour(rng, 0, 0.9))
        cv2.fillPoly(canvas, [pts], fill, cv2.LINE_AA)
    else:  # a flag: stripes in a box
        stripes = int(rng.integers(3, 8))
        a, b = _rand_colour(rng, 0.0, 1.0), _rand_colour(rng, 0.0, 1.0)
        for k in range(stripes):
            y0 = y + k * h // stripes
            cv2.rectangle(canvas, (x, y0), (x + w, y0 + h // stripes),
                          cv_colour(a if k % 2 else b), -1)
        cv2.rectangle(canvas, (x, y), (x + w * 2 // 5, y + h // 2),
                      cv_colour(_rand_colour(rng, 0.0, 0.7)), -1)


def _small_text(rng, canvas, text, x, y, w, h, colour) -> None:
    fonts = font_sets()["decor"] + font_sets()["small"]
    paint(canvas, text_mask(text, fonts[rng.integers(len(fonts))], 40), x, y, w, h, colour)


def _bolts(rng, canvas, h, w) -> None:
    if rng.random() < 0.5:
        return
    r = max(2, int(h * rng.uniform(0.03, 0.05)))
    col = cv_colour(_rand_colour(rng, 0.1, 0.7))
    yb = int(h * rng.uniform(0.08, 0.2))
    for xb in (int(w * 0.22), int(w * 0.78)):
        cv2.circle(canvas, (xb, yb), r, col, -1, cv2.LINE_AA)
        if rng.random() < 0.5:
            cv2.circle(canvas, (xb, h - yb), r, col, -1, cv2.LINE_AA)


def _border(rng, canvas, colour) -> None:
    h, w = canvas.shape[:2]
    t = int(rng.integers(1, max(2, h // 25)))
    cv2.rectangle(canvas, (t, t), (w - 1 - t, h - 1 - t), cv_colour(colour),
                  t, cv2.LINE_AA)


def render_us(rng: np.random.Generator, text: str, display: str) -> Plate:
    h, w = 120, int(120 * rng.uniform(1.85, 2.1))
    light = rng.random() < 0.88
    base = _rand_colour(rng, 0.8, 1.0) if light else _rand_colour(rng, 0.0, 0.35)
    canvas = _background(rng, h, w, base, art=rng.uniform(0, 0.45) if light else 0.0)
    if light:
        colour = _rand_colour(rng, 0.0, 0.35)
        colour[rng.integers(3)] = rng.uniform(0.0, 0.6)
    else:
        colour = _rand_colour(rng, 0.75, 1.0)
    fonts = font_sets()["us"]
    font = fonts[rng.integers(len(fonts))]
    display = shared_shapes(rng, display, font, "us")
    th = int(h * rng.uniform(0.42, 0.58))
    ty = int(h * rng.uniform(0.24, 0.34))
    n = max(len(display), 2)
    tw = int(min(w * rng.uniform(0.72, 0.92), th * n * rng.uniform(0.5, 0.72)))
    tx = (w - tw) // 2 + int(rng.integers(-w // 30, w // 30 + 1))
    emblem = None
    if rng.random() < US_EMBLEM_SHARE:  # a picture close beside the serial: it moves over
        ew = int(th * rng.uniform(0.5, 1.1))
        gap = int(w * rng.uniform(0.01, 0.05))
        tw = min(tw, int(w * 0.92) - ew - gap)
        left = rng.random() < 0.75
        tx = int(w * 0.04) + ew + gap if left else w - int(w * 0.04) - ew - gap - tw
        eh = int(th * rng.uniform(0.8, 1.3))
        emblem = (tx - gap - ew if left else tx + tw + gap, ty + th // 2 - eh // 2, ew, eh)
    gaps = [i for i, c in enumerate(display) if c in " -"]
    mark_at = None
    if gaps and rng.random() < 0.3:  # a graphic in the gap between groups
        k = gaps[int(rng.integers(len(gaps)))]
        display = display[:k] + "  " + display[k + 1:]
        mark_at = k
    _draw_serial(rng, canvas, display, font, tx, ty, tw, th, colour, emboss=rng.random() < 0.35)
    if mark_at is not None:
        f = _font(font, 72)
        frac = (f.getlength(display[:mark_at + 1]) / max(1.0, f.getlength(display)))
        _separator_mark(rng, canvas, tx + int(frac * tw), ty + th // 2,
                        int(th * rng.uniform(0.3, 0.6)), colour if rng.random() < 0.6
                        else _rand_colour(rng, 0.0, 0.9))
    if emblem is not None:
        _emblem(rng, canvas, *emblem, colour if rng.random() < 0.5 else _rand_colour(rng, 0, 1))
    elif rng.random() < 0.25 and tx > w * 0.09:  # stacked marker letters left or right
        sw = int(min(tx * 0.6, th * 0.3))
        sx = tx - sw - int(w * 0.01) if rng.random() < 0.6 else tx + tw + int(w * 0.01)
        _stacked_letters(rng, canvas, sx, ty, sw, th, colour)
    # State name on top, slogan below: the clutter the reader has to ignore.
    state_col = _rand_colour(rng, 0.0, 0.7)
    if rng.random() < 0.92:
        name = US_STATES[rng.integers(len(US_STATES))]
        sw = int(w * rng.uniform(0.35, 0.7))
        _small_text(rng, canvas, name, (w - sw) // 2, int(h * rng.uniform(0.03, 0.07)), sw,
                    int(h * rng.uniform(0.13, 0.2)), state_col)
    if rng.random() < 0.7:
        slogan = US_SLOGANS[rng.integers(len(US_SLOGANS))]
        sw = int(w * rng.uniform(0.3, 0.6))
        _small_text(rng, canvas, slogan, (w - sw) // 2, int(h * rng.uniform(0.82, 0.87)), sw,
                    int(h * rng.uniform(0.08, 0.12)), state_col)
    # Registration stickers in the top corners, sometimes lower down beside the serial.
    for corner in (0, 1):
        if rng.random() < 0.45:
            sw, sh = int(w * rng.uniform(0.08, 0.14)), int(h * rng.uniform(0.12, 0.2))
            sx = int(w * 0.04) if corner == 0 else w - sw - int(w * 0.04)
            beside = sx + sw < tx if corner == 0 else sx > tx + tw  # clear of the serial
            sy = int(h * (rng.uniform(0.3, 0.6) if beside and rng.random() < 0.4
                          else rng.uniform(0.04, 0.1)))
            cv2.rectangle(canvas, (sx, sy), (sx + sw, sy + sh),
                          cv_colour(_rand_colour(rng, 0, 1)), -1)
            if rng.random() < 0.6:
                _small_text(rng, canvas, ("JUL", "SEP", "MAR", "24", "25", "DEC", "5")[
                    rng.integers(7)], sx + 2, sy + 2, sw - 4, sh - 4, (0.05, 0.05, 0.05))
    _bolts(rng, canvas, h, w)
    if rng.random() < 0.5:
        _border(rng, canvas, colour)
    return Plate(canvas, text, (tx, ty, tw, th))


def render_eu(rng: np.random.Generator, text: str, display: str, region: str) -> Plate:
    h = 110
    w = int(h * rng.uniform(3.9, 4.7))
    yellow = region == "GB" and rng.random() < 0.5 or region == "EU" and rng.random() < 0.1
    base = np.array([0.05, 0.8, 0.95], np.float32) if yellow else _rand_colour(rng, 0.85, 1.0)
    base = np.clip(base + rng.uniform(-0.08, 0.05, 3).astype(np.float32), 0, 1)
    canvas = _background(rng, h, w, base, art=0.0)
    band_w = 0
    if rng.random() < (0.85 if region == "EU" else 0.4):
        band_w = int(w * rng.uniform(0.07, 0.09))
        canvas[:, :band_w] = np.array([0.6, 0.2, 0.0], np.float32) + rng.uniform(-0.1, 0.1)
        cv2.circle(canvas, (band_w // 2, int(h * 0.3)), max(2, band_w // 3), (0.1, 0.8, 0.95), 1)
        code = EU_CODES[rng.integers(len(EU_CODES))] if region == "EU" else "GB"
        _small_text(rng, canvas, code, int(band_w * 0.15), int(h * 0.6), int(band_w * 0.7),
                    int(h * 0.28), (1.0, 1.0, 1.0))
    colour = _rand_colour(rng, 0.0, 0.15)
    fonts = font_sets()["din"]
    font = fonts[rng.integers(len(fonts))]
    th = int(h * rng.uniform(0.62, 0.78))
    ty = (h - th) // 2 + int(rng.integers(-4, 5))
    avail = w - band_w
    tw = int(min(avail * rng.uniform(0.8, 0.94), th * len(display) * rng.uniform(0.55, 0.7)))
    tx = band_w + (avail - tw) // 2
    _draw_serial(rng, canvas, display, font, tx, ty, tw, th, colour, emboss=rng.random() < 0.3)
    _border(rng, canvas, colour)
    return Plate(canvas, text, (tx, ty, tw, th))


def render_br(rng: np.random.Generator, text: str, display: str, mercosur: bool,
              country: str) -> Plate:
    h = 120
    if mercosur:
        w = int(h * rng.uniform(2.9, 3.2))
        canvas = _background(rng, h, w, _rand_colour(rng, 0.88, 1.0), art=0.0)
        band_h = int(h * rng.uniform(0.18, 0.24))
        canvas[:band_h] = np.array([0.55, 0.2, 0.0], np.float32) + rng.uniform(-0.1, 0.1)
        _small_text(rng, canvas, "BRASIL" if country == "BR" else "REPUBLICA ARGENTINA",
                    int(w * 0.3), int(band_h * 0.15), int(w * 0.4), int(band_h * 0.7),
                    (1.0, 1.0, 1.0))
        colour = _rand_colour(rng, 0.0, 0.12)
        fonts = font_sets()["din"]
        th = int(h * rng.uniform(0.5, 0.62))
        ty = band_h + (h - band_h - th) // 2
    else:
        w = int(h * (rng.uniform(3.0, 3.2) if country == "BR" else rng.uniform(2.2, 2.5)))
        if country == "BR":
            grey = rng.random() < 0.8
            base = _rand_colour(rng, 0.65, 0.85) if grey else np.array([0.1, 0.1, 0.7],
                                                                       np.float32)
            colour = _rand_colour(rng, 0.0, 0.15) if grey else _rand_colour(rng, 0.9, 1.0)
        else:
            base = _rand_colour(rng, 0.0, 0.12)  # Argentina old: black with white letters
            colour = _rand_colour(rng, 0.85, 1.0)
        canvas = _background(rng, h, w, base, art=0.0)
        top = int(h * rng.uniform(0.18, 0.25))
        if rng.random() < 0.7:
            town = ("SP SAO PAULO", "RJ RIO DE JANEIRO", "MG BELO HORIZONTE", "PR CURITIBA",
                    "RS PORTO ALEGRE", "ARGENTINA")[rng.integers(6)]
            _small_text(rng, canvas, town, int(w * 0.2), int(top * 0.15), int(w * 0.6),
                        int(top * 0.7), colour)
        fonts = font_sets()["br_old"]
        th = int(h * rng.uniform(0.5, 0.62))
        ty = top + (h - top - th) // 2
    font = fonts[rng.integers(len(fonts))]
    if country == "BR" and not mercosur:
        display = shared_shapes(rng, display, font, "br_old")
    tw = int(min(w * rng.uniform(0.82, 0.94), th * len(display) * rng.uniform(0.55, 0.72)))
    tx = (w - tw) // 2
    _draw_serial(rng, canvas, display, font, tx, ty, tw, th, colour, emboss=rng.random() < 0.5)
    _border(rng, canvas, colour * 0.5)
    _bolts(rng, canvas, h, w)
    return Plate(canvas, text, (tx, ty, tw, th))


def render_plate(rng: np.random.Generator, text: str, display: str, region: str,
                 fmt_name: str = "") -> Plate:
    """Draw the plate for ``region`` (US, GB, EU, BR, AR, or anything else: a generic plate)."""
    if region == "US":
        return render_us(rng, text, display)
    if region in ("BR", "AR"):
        return render_br(rng, text, display, "mercosur" in fmt_name, region)
    if region in ("GB", "EU"):
        return render_eu(rng, text, display, region)
    # Generic: other countries, dealer and odd plates; pick any style.
    pick = rng.random()
    if pick < 0.4:
        return render_us(rng, text, display)
    if pick < 0.8:
        return render_eu(rng, text, display, "EU")
    return render_br(rng, text, display, rng.random() < 0.5, "BR")
