"""Random plate text drawn from the region format tables (agent.vision.plate_formats)."""
from __future__ import annotations

import numpy as np

from agent.vision.plate_formats import CHARSET, DIGITS, FORMATS, LETTERS, PlateFormat

# Vanity-plate material: short words and fragments people put on plates.
VANITY_WORDS = (
    "LUCKY", "GOFAST", "MYCAR", "SURF", "BEACH", "HAPPY", "SMILE", "ROCKET", "TIGER", "EAGLE",
    "DREAM", "JAZZ", "MAMA", "PAPA", "NANA", "BOSS", "CHIEF", "KING", "QUEEN", "ZOOM", "WOLF",
    "BEAR", "FISH", "GOLF", "TENNIS", "YOGA", "COFFEE", "PIZZA", "TACO", "HONEY", "SUNNY",
    "STORM", "RIDER", "BIKER", "DOC", "NURSE", "TEACH", "LAW", "FARM", "RANCH", "TRUCK", "JEEP",
    "VETTE", "MUSTNG", "CAMARO", "RACER", "DRIFT", "TURBO", "NITRO", "SLOW", "FAST", "LOVE",
    "HOPE", "FAITH", "GRACE", "BLESSD", "PRAY", "GOD", "JESUS", "SAINT", "ANGEL", "DEVIL",
    "HELL", "HEAVEN", "MUSIC", "GUITAR", "DRUMS", "PIANO", "ROCK", "BLUES", "COUNTRY", "NERD",
    "GEEK", "CODE", "HACKER", "MATH", "PHYSIX", "CHEM", "BIO", "ART", "PAINT", "MOVIE", "FILM",
    "BOOKS", "READ", "WRITE", "POET", "DANCE", "SING", "WINE", "BEER", "VINO", "PARTY", "FUN",
    "CRAZY", "WILD", "FREE", "SKY", "SEA", "OCEAN", "LAKE", "RIVER", "MTN", "HIKER", "CAMP",
)


def random_vanity(rng: np.random.Generator) -> str:
    """A vanity plate: a word, a word with digits, or random characters (2-7 long)."""
    kind = rng.random()
    if kind < 0.45:
        word = VANITY_WORDS[rng.integers(len(VANITY_WORDS))]
        if rng.random() < 0.4:
            word += "".join(rng.choice(list(DIGITS), size=rng.integers(1, 3)))
        if rng.random() < 0.2:
            word = "".join(rng.choice(list(LETTERS), size=rng.integers(1, 3))) + word
        return word[:7]
    length = int(rng.integers(2, 8))
    pool = LETTERS if rng.random() < 0.5 else CHARSET
    return "".join(rng.choice(list(pool), size=length))


def random_from_format(fmt: PlateFormat, rng: np.random.Generator) -> tuple[str, str]:
    """``(text, display)``: plate text and the same with the format's separators."""
    if not fmt.strict:
        text = random_vanity(rng)
        if len(text) > 4 and rng.random() < 0.3:
            cut = int(rng.integers(2, len(text) - 1))
            return text, text[:cut] + " " + text[cut:]
        return text, text
    out_text, out_display = [], []
    for cls in fmt.display:
        if cls == "D":
            ch = DIGITS[rng.integers(10)]
            if not out_text and not fmt.leading_zero:
                ch = DIGITS[1 + rng.integers(9)]
        elif cls == "L":
            ch = fmt.letters[rng.integers(len(fmt.letters))]
        elif cls == "A":
            ch = CHARSET[rng.integers(len(CHARSET))]
        else:
            out_display.append(cls)
            continue
        out_text.append(ch)
        out_display.append(ch)
    return "".join(out_text), "".join(out_display)


def random_generic(rng: np.random.Generator) -> tuple[str, str]:
    """Text of no listed format (other countries, dealer plates): 4-8 characters."""
    length = int(rng.integers(4, 9))
    text = "".join(rng.choice(list(CHARSET), size=length))
    if rng.random() < 0.5:
        cut = int(rng.integers(1, length))
        return text, text[:cut] + rng.choice([" ", "-", " "]) + text[cut:]
    return text, text


def choose_format(rng: np.random.Generator, region: str | None = None) -> PlateFormat:
    """A format drawn by the table weights, optionally within one region."""
    pool = [f for f in FORMATS if region is None or f.region == region]
    weights = np.array([f.weight for f in pool], dtype=np.float64)
    return pool[int(rng.choice(len(pool), p=weights / weights.sum()))]
