"""Plate text formats per region: the one table used both to *generate* synthetic plates
(tools/synth) and to *post-process* what the OCR reads.

Why one table: if the generator and the post-processing disagreed about what a Brazilian or
Californian plate can look like, the model would be trained on one world and corrected towards
another. A format is a pattern over character classes; where a position can only hold a letter
(or only a digit) the post-processing may turn a confusable glyph (O/0, I/1, B/8, S/5, Z/2) into
the one the format allows, and reports which format matched.

Pattern letters: ``L`` a letter from the format's alphabet, ``D`` a digit, ``A`` letter or digit
(vanity plates). Any other character in ``display`` (space, dash, dot) is a separator that is
drawn on the plate but is not part of the plate text.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

DIGITS = "0123456789"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
CHARSET = DIGITS + LETTERS  # the OCR model's classes, blank excluded (it is index 0)
US_SERIAL_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"  # most US states skip I, O and Q in serials
UK_LETTERS = "ABCDEFGHJKLMNOPRSTUVWXYZ"  # no I, Q

# Pairs a plate font makes hard to tell apart: letter -> digit.
CONFUSABLE_LETTER_TO_DIGIT = {"O": "0", "Q": "0", "D": "0", "I": "1", "B": "8", "S": "5",
                              "Z": "2", "G": "6"}
CONFUSABLE_DIGIT_TO_LETTER = {"0": "O", "1": "I", "8": "B", "5": "S", "2": "Z", "6": "G"}


@dataclass(frozen=True)
class PlateFormat:
    """One way a region writes its plates.

    ``display`` is the pattern as drawn (with separators); ``weight`` is how common it is when
    generating; ``strict`` False marks vanity/free formats, which never drive a correction.
    """

    name: str
    region: str
    display: str
    letters: str = LETTERS
    weight: float = 1.0
    strict: bool = True

    @cached_property
    def pattern(self) -> str:
        """The pattern without separators: one class letter per plate character."""
        return "".join(c for c in self.display if c in "LDA")

    def allows(self, position: int, char: str) -> bool:
        """Whether ``char`` may stand at ``position`` of the plate text."""
        cls = self.pattern[position]
        if cls == "D":
            return char in DIGITS
        if cls == "L":
            return char in self.letters
        return char in CHARSET

    def matches(self, text: str) -> bool:
        """Whether the whole plate text fits this format."""
        return len(text) == len(self.pattern) and all(
            self.allows(i, c) for i, c in enumerate(text))


def _us(display: str, weight: float) -> PlateFormat:
    return PlateFormat(f"us.{display.replace(' ', '_')}", "US", display, US_SERIAL_LETTERS, weight)


FORMATS: tuple[PlateFormat, ...] = (
    # United States: the common state serial layouts (e.g. CA 1ABC234, NY/PA/TX ABC-1234,
    # many states ABC 123 / 123 ABC) and vanity plates.
    _us("DLLLDDD", 3.0),
    _us("LLL-DDDD", 3.0),
    _us("LLL DDDD", 2.0),
    _us("LLL DDD", 2.0),
    _us("DDD LLL", 1.5),
    _us("DDD-LLL", 1.0),
    _us("LLL-DDD", 1.0),
    _us("DDDD LL", 0.5),
    _us("LL DDDDD", 0.5),
    _us("DLL DDD", 0.7),
    _us("DDL LDD", 0.3),
    _us("LLL LDD", 0.7),
    _us("DDL DDDD", 0.3),
    _us("DDD DDDD", 0.3),
    _us("LLLL DDD", 0.5),
    _us("DDDDDD", 0.5),
    _us("DLL LDDD", 0.3),
    _us("LD LDDD", 0.2),
    PlateFormat("us.vanity", "US", "AAAAAAA", LETTERS, 3.0, strict=False),
    # United Kingdom (2001 on): AB12 CDE.
    PlateFormat("gb.current", "GB", "LLDD LLL", UK_LETTERS, 2.0),
    # EU single-line, a few representative national layouts.
    PlateFormat("eu.de", "EU", "LL LL DDDD", LETTERS, 1.0),
    PlateFormat("eu.de_short", "EU", "L LL DDD", LETTERS, 0.6),
    PlateFormat("eu.fr_it", "EU", "LL-DDD-LL", LETTERS, 1.0),
    PlateFormat("eu.it", "EU", "LL DDDLL", LETTERS, 0.5),
    PlateFormat("eu.es", "EU", "DDDD LLL", LETTERS, 0.8),
    PlateFormat("eu.nl", "EU", "LL-DDD-L", LETTERS, 0.5),
    PlateFormat("eu.ro", "EU", "LL DD LLL", LETTERS, 1.0),
    PlateFormat("eu.ro_b", "EU", "L DDD LLL", LETTERS, 0.6),
    PlateFormat("eu.pl", "EU", "LL DDDDD", LETTERS, 0.6),
    PlateFormat("eu.cz", "EU", "DLD DDDD", LETTERS, 0.5),
    PlateFormat("eu.sk", "EU", "LL DDDLL", LETTERS, 0.5),
    PlateFormat("eu.at", "EU", "L DDDD L", LETTERS, 0.3),
    # Brazil: old grey plates ABC-1234 and Mercosur ABC1D23.
    PlateFormat("br.old", "BR", "LLL-DDDD", LETTERS, 2.0),
    PlateFormat("br.mercosur", "BR", "LLLDLDD", LETTERS, 1.5),
    # Argentina: old ABC 123 and Mercosur AB 123 CD.
    PlateFormat("ar.old", "AR", "LLL DDD", LETTERS, 1.0),
    PlateFormat("ar.mercosur", "AR", "LL DDD LL", LETTERS, 1.0),
)

REGIONS: tuple[str, ...] = ("US", "GB", "EU", "BR", "AR")
# Regions whose table lists every layout the region issues to cars: a reading that fits none
# of them cannot be that region's plate, however sure the model is of its glyphs. Brazil has
# had two car layouts since 1990 (grey ABC-1234, Mercosur ABC1D23), and the grey plates'
# "Mandatory" lettering draws I and 1 (and O and 0 nearly) as the same shape, so only the
# position can tell them apart. The US (vanity plates), the EU sample and Argentina
# (motorcycle layouts not in the table) are not exhaustive.
EXHAUSTIVE_REGIONS: tuple[str, ...] = ("BR",)


US_STATE_CODES: tuple[str, ...] = (
    "AL", "AK", "AZ", "AR", "CA", "CO", "CT", "DE", "DC", "FL", "GA", "HI", "ID", "IL", "IN", "IA",
    "KS", "KY", "LA", "ME", "MD", "MA", "MI", "MN", "MS", "MO", "MT", "NE", "NV", "NH", "NJ", "NM",
    "NY", "NC", "ND", "OH", "OK", "OR", "PA", "RI", "SC", "SD", "TN", "TX", "UT", "VT", "VA", "WA",
    "WV", "WI", "WY")
# States that issue no letter O on any plate, vanity plates included: their records hold a zero
# wherever a plate shows the round glyph (their keying rules for registered-owner lookups say
# "key zero"). Elsewhere both are issued, and the glyph alone often cannot tell them apart.
STATES_WITHOUT_LETTER_O: tuple[str, ...] = ("AL", "FL", "ID")


def region_key(region: str | None) -> str | None:
    """The table region a hint names (``us``, ``ca`` for a US state, ``UK``...), else None."""
    if not region:
        return None
    key = region.strip().upper()
    if key.startswith("US-") or (len(key) == 2 and key not in REGIONS and key not in ("UK",)):
        key = "US"  # OpenALPR benchmark rows name US states by their two-letter code
    if key == "UK":
        key = "GB"
    return key if key in REGIONS else None


def formats_for(region: str | None) -> tuple[PlateFormat, ...]:
    """Formats of a region hint (``US``, ``us``, ``ca`` for a US state, ``BR``...); all if None."""
    key = region_key(region)
    chosen = tuple(f for f in FORMATS if f.region == key)
    return chosen or FORMATS


def is_exhaustive(region: str | None) -> bool:
    """Whether the hint names a region whose table holds every plate layout it issues."""
    return region_key(region) in EXHAUSTIVE_REGIONS


def normalise_text(text: str) -> str:
    """Plate text as compared everywhere: upper case, no spaces, dashes or dots."""
    return "".join(c for c in text.upper() if c not in " -.\t")


def matching_format(text: str, region: str | None = None) -> PlateFormat | None:
    """The first strict format of the region (in table order) that ``text`` fits, else None."""
    for fmt in formats_for(region):
        if fmt.strict and fmt.matches(text):
            return fmt
    return None


def us_state(region: str | None) -> str | None:
    """The US state a hint names (``US-FL``, or ``fl`` where that is not a region), else None."""
    if not region:
        return None
    key = region.strip().upper()
    if key.startswith("US-"):
        key = key[3:]
    elif region_key(key) != "US":
        return None  # "AR" alone is Argentina, not Arkansas
    return key if key in US_STATE_CODES else None


def letters_read_as_digits(region: str | None) -> dict[str, str]:
    """Letters the hint's jurisdiction never issues, each with the digit drawn the same way:
    a reading there holds the digit wherever the model saw that glyph."""
    return {"O": "0"} if us_state(region) in STATES_WITHOUT_LETTER_O else {}
