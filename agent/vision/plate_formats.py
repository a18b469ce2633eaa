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

import re
from dataclasses import dataclass
from functools import cached_property

from agent.regions import (EXHAUSTIVE_REGIONS, REGIONS,  # noqa: F401 (part of this table's API)
                           STATES_WITHOUT_LETTER_O, US_STATE_CODES)

DIGITS = "0123456789"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
CHARSET = DIGITS + LETTERS  # the OCR model's classes, blank excluded (it is index 0)
US_SERIAL_LETTERS = "ABCDEFGHJKLMNPRSTUVWXYZ"  # most US states skip I, O and Q in serials
UK_LETTERS = "ABCDEFGHJKLMNOPRSTUVWXYZ"  # no I, Q

# Pairs a plate font makes hard to tell apart: letter -> digit. A format decides these where a
# position holds only letters or only digits. A/4 joined with issue 20 (small, dark plates:
# the open 4 of several state faces reads as an A).
CONFUSABLE_LETTER_TO_DIGIT = {"O": "0", "Q": "0", "D": "0", "I": "1", "B": "8", "S": "5",
                              "Z": "2", "G": "6", "A": "4"}
CONFUSABLE_DIGIT_TO_LETTER = {"0": "O", "1": "I", "8": "B", "5": "S", "2": "Z", "6": "G",
                              "4": "A"}
# Letter pairs that blur into each other on small, dark or motion-blurred plates (issue 20:
# W/M, V/U, M/H). Both are letters, so a format can decide them only where no layout of the
# region has one of them in that position (Arizona issues no U, but the other states' cars that
# pass an Arizona camera do); so the reader puts the twin among the top-5 candidates, where a
# hotlist match can still find it.
LETTER_TWINS: dict[str, tuple[str, ...]] = {"W": ("M",), "M": ("W", "H"), "H": ("M",),
                                            "V": ("U",), "U": ("V",)}


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
    states: tuple[str, ...] = ()  # US states (and DC) that issue this layout
    leading_zero: bool = True  # False: a serial that starts with a digit never starts with 0

    @cached_property
    def pattern(self) -> str:
        """The pattern without separators: one class letter per plate character."""
        return "".join(c for c in self.display if c in "LDA")

    def _rule_allows(self, position: int, char: str) -> bool:
        """The rule itself: whether ``char`` may stand at ``position`` of the plate text."""
        cls = self.pattern[position]
        if cls == "D":
            return char in DIGITS and (position > 0 or self.leading_zero or char != "0")
        if cls == "L":
            return char in self.letters
        return char in CHARSET

    @cached_property
    def _allowed(self) -> tuple[frozenset[str], ...]:
        """Per position, every character the rule allows there. Why: the reader asks these
        questions thousands of times per plate (every beam against every layout of its
        length); a set lookup answers them without re-running the rule."""
        alphabet = set(CHARSET) | set(DIGITS) | set(self.letters)
        return tuple(frozenset(c for c in alphabet if self._rule_allows(i, c))
                     for i in range(len(self.pattern)))

    def allows(self, position: int, char: str) -> bool:
        """Whether ``char`` may stand at ``position`` of the plate text."""
        return char in self._allowed[position]

    @cached_property
    def _regex(self) -> re.Pattern[str]:
        return re.compile("".join("[" + "".join(re.escape(c) for c in sorted(a)) + "]"
                                  for a in self._allowed))

    def matches(self, text: str) -> bool:
        """Whether the whole plate text fits this format."""
        return self._regex.fullmatch(text) is not None

    def _rule_repair(self, position: int, char: str) -> str | None:
        """``char`` if it may stand at ``position``, else its first confusable twin that may
        (O->0, 8->B, ... then the letter twins such as U->V), else None."""
        if self.allows(position, char):
            return char
        twins = [CONFUSABLE_LETTER_TO_DIGIT.get(char) or CONFUSABLE_DIGIT_TO_LETTER.get(char)]
        twins += LETTER_TWINS.get(char, ())  # a letter the format's alphabet lacks (AZ: no U)
        return next((t for t in twins if t is not None and self.allows(position, t)), None)

    @cached_property
    def _repairs(self) -> tuple[dict[str, str | None], ...]:
        return tuple({c: self._rule_repair(i, c) for c in CHARSET}
                     for i in range(len(self.pattern)))

    def fit(self, text: str) -> str | None:
        """``text`` with each glyph the format does not allow swapped for its confusable twin,
        or None when some glyph has no twin the format allows (or the length differs).
        Answered from a per-position table: the reader asks this for every beam against every
        layout of its length."""
        repairs = self._repairs
        if len(text) != len(repairs):
            return None
        out = []
        for i, ch in enumerate(text):
            fixed = repairs[i].get(ch) if ch in repairs[i] else self._rule_repair(i, ch)
            if fixed is None:
                return None
            out.append(fixed)
        return "".join(out)


# --- United States -----------------------------------------------------------------------
# Sources (public plate references, consulted 2026-12; serials change as states run through
# them, so each entry is "the layout issued on the current standard passenger plate", plus the
# earlier layouts still common on the road where a state changed recently):
#   [W]  Wikipedia, "United States license plate designs and serial formats", table of current
#        standard-issue passenger serials (and each state's "Vehicle registration plates of
#        <state>" article it links to);
#   [A]  atroq.com, "U.S. License Plate Serial Formats & Designs - Complete 2025 Reference"
#        (state table compiled from DMV pages and vehicle codes);
#   [D]  the state DMV's own plate pages where they state the layout: California DMV
#        ("sequential 1ABC234"), Texas DMV (random "ABC-1234" since 2020), Florida HSMV,
#        Maryland MVA ("1AB2345"), Illinois SOS ("AB 12345"), New Hampshire DMV (numeric),
#        Massachusetts RMV, Missouri DOR ("AB1-C2D"), Delaware DMV (numeric);
#   [F]  FHWA Highway Statistics 2022, table MV-1 (registered motor vehicles by state): the
#        generator weights, in millions, rounded (only the proportions matter).
# Letters: most states skip I, O and Q in serials (US_SERIAL_LETTERS) [W]; Arizona also skips
# U [A]. Serials and county codes count from 1, so no US layout that starts with a digit
# starts with a 0 [W] (``leading_zero=False``): without a region hint, a grey Brazilian
# "OZU-5764" read as 0ZU5764 would otherwise fit Maryland's 1AB2345. West Virginia's month-coded first character may be O, N or D [W]; it is drawn as a
# letter from the serial alphabet here.


@dataclass(frozen=True)
class StateSerial:
    """One serial layout a state issues, with its share of that state's plates on the road."""

    display: str
    share: float = 1.0
    letters: str = US_SERIAL_LETTERS


def _s(*layouts: str | tuple[str, float], letters: str = US_SERIAL_LETTERS
       ) -> tuple[StateSerial, ...]:
    out = []
    for item in layouts:
        display, share = (item, 1.0) if isinstance(item, str) else item
        out.append(StateSerial(display, share, letters))
    return tuple(out)


AZ_LETTERS = "ABCDEFGHJKLMNPRSTVWXYZ"  # Arizona skips U as well [A]

# Registered motor vehicles, millions [F] (rounded).
US_REGISTRATIONS_M: dict[str, float] = {
    "AL": 5.3, "AK": 0.8, "AZ": 6.0, "AR": 3.0, "CA": 30.0, "CO": 5.5, "CT": 2.9, "DE": 1.0,
    "DC": 0.3, "FL": 18.0, "GA": 8.5, "HI": 1.2, "ID": 2.0, "IL": 10.5, "IN": 6.2, "IA": 4.0,
    "KS": 2.7, "KY": 4.5, "LA": 3.9, "ME": 1.1, "MD": 4.2, "MA": 5.0, "MI": 8.5, "MN": 5.5,
    "MS": 2.2, "MO": 5.5, "MT": 1.8, "NE": 2.0, "NV": 2.5, "NH": 1.3, "NJ": 5.9, "NM": 1.8,
    "NY": 11.5, "NC": 9.0, "ND": 0.9, "OH": 10.5, "OK": 3.7, "OR": 3.9, "PA": 10.5, "RI": 0.9,
    "SC": 4.6, "SD": 1.2, "TN": 6.0, "TX": 23.0, "UT": 2.6, "VT": 0.6, "VA": 8.0, "WA": 7.0,
    "WV": 1.5, "WI": 5.5, "WY": 0.8,
}

# Standard passenger serials per state and DC [W][A][D]; shares are our estimate of the mix on
# the road (current layout first, earlier still-valid layouts after it).
US_STATE_SERIALS: dict[str, tuple[StateSerial, ...]] = {
    "AL": _s(("DLDDDDD", 0.5), ("DDLDDDD", 0.5)),     # county code 1-67, letter, serial [A][W]
    "AK": _s("LLL DDD"),                                # ABC 123 [W][A]
    "AZ": _s(("AAA DAA", 0.5), ("LLL DDDD", 0.5), letters=AZ_LETTERS),  # 4th always a digit [W]
    "AR": _s(("LLL DDL", 0.8), ("DDD LLL", 0.2)),       # ABC 12D, earlier 123 ABC [W][A]
    "CA": _s("DLLLDDD"),                                # 1ABC234 [D][W]
    "CO": _s(("LLL-LDD", 0.7), ("DDD-LLL", 0.3)),       # ABC-D12, earlier 123-ABC [W]
    "CT": _s(("LL-DDDDD", 0.7), ("DDD-LLL", 0.2), ("DLL-LDD", 0.1)),  # AB-12345 [W]
    "DE": _s(("DDDDDD", 0.7), ("DDDDD", 0.3)),          # all-numeric [D][W]
    "DC": _s("LL-DDDD"),                                # AB-1234 [W]
    "FL": _s(("LLL LDD", 0.7), ("DDDD LL", 0.1), ("LLL DDD", 0.1), ("DDD LLL", 0.1)),  # [W]
    "GA": _s("LLL DDDD"),                               # ABC 1234 [W]
    "HI": _s("LLL DDD"),                                # ABC 123 [W]
    "ID": _s(("DL DDDDD", 0.5), ("L DDDDDD", 0.3), ("DL DDDDL", 0.2)),  # county-coded [W][A]
    "IL": _s(("LL DDDDD", 0.8), ("L DDDDDD", 0.2)),     # AB 12345, earlier A12 3456 [D][W]
    "IN": _s(("DDD LLL", 0.7), ("LLL DDD", 0.3)),       # 123ABC [W]
    "IA": _s(("LLL DDD", 0.7), ("DDD LLL", 0.3)),       # ABC 123 [W]
    "KS": _s(("DDD LLL", 0.7), ("DDDD LLL", 0.3)),      # 123 ABC; 1234ABC [W]
    "KY": _s("DDD LLL"),                                # 123 ABC [W]
    "LA": _s(("DDD LLL", 0.6), ("LLL DDD", 0.4)),       # [W]
    "ME": _s(("DDDD LL", 0.8), ("DDD LL", 0.2)),        # 1234 AB [W]
    "MD": _s("DLL DDDD"),                               # 1AB2345 [D][W]
    "MA": _s(("DLLL DD", 0.4), ("DLL DDD", 0.3), ("DDD LLL", 0.3)),  # 1ABC23, 1AB 234 [W]
    "MI": _s(("LLL DDDD", 0.8), ("DLLL DD", 0.2)),      # ABC 1234 [W]
    "MN": _s(("LLL-DDD", 0.8), ("DDD-LLL", 0.2)),       # ABC-123 [W]
    "MS": _s(("LLL DDDD", 0.7), ("LLL DDD", 0.3)),      # [W]
    "MO": _s("LLD-LDL"),                                # AB1-C2D [D][W]
    "MT": _s(("D-DDDDDL", 0.5), ("DD-DDDDL", 0.5)),     # county code, serial, letter [W]
    "NE": _s(("LLL DDD", 0.7), ("DD-LDDD", 0.2), ("D-LDDD", 0.1)),  # county-coded outside
    #                                                      Douglas/Lancaster/Sarpy [W]
    "NV": _s(("DDL DDD", 0.6), ("DDD LLL", 0.4)),       # [A][W]
    "NH": _s(("DDD DDDD", 0.8), ("DDDDDD", 0.2)),       # numeric [D][W]
    "NJ": _s("LDD-LLL"),                                # A12-BCD [W]
    "NM": _s(("LLL-DDD", 0.6), ("DDD-LLL", 0.4)),       # [W]
    "NY": _s("LLL-DDDD"),                               # ABC-1234 [W]
    "NC": _s("LLL-DDDD"),                               # ABC-1234 [W]
    "ND": _s(("DDD LLL", 0.7), ("LLL DDD", 0.3)),       # [W]
    "OH": _s("LLL DDDD"),                               # ABC 1234 [W]
    "OK": _s(("LLL-DDD", 0.8), ("DDD-LLL", 0.2)),       # [W]
    "OR": _s(("DDD LLL", 0.6), ("LLL DDD", 0.4)),       # [W]
    "PA": _s("LLL-DDDD"),                               # ABC-1234 [W]
    "RI": _s(("DDDDDD", 0.6), ("DDDDD", 0.2), ("LL-DDD", 0.2)),  # numeric [W]
    "SC": _s(("LLL DDD", 0.7), ("DDD LLL", 0.3)),       # [W]
    "SD": _s(("DLDDDD", 0.5), ("DDLDDD", 0.5)),         # county code, letter, serial [W]
    "TN": _s(("LLL-DDDD", 0.7), ("DDD-LLL", 0.3)),      # [W]
    "TX": _s(("LLL-DDDD", 0.9), ("LLD-LDDD", 0.1)),     # random ABC-1234 [D]; AB1-C234 [W]
    "UT": _s(("LDD DLL", 0.5), ("DDD LLL", 0.5)),       # [A][W]
    "VT": _s(("LLL DDD", 0.8), ("DDDLDDD", 0.2)),       # [W]
    "VA": _s("LLL-DDDD"),                               # ABC-1234 [W]
    "WA": _s("LLLDDDD"),                                # ABC1234 [W]
    "WV": _s(("DLL DDD", 0.8), ("LLL DDD", 0.2)),       # month code first [W]
    "WI": _s(("LLL-DDDD", 0.8), ("LLL-DDD", 0.2)),      # [W]
    "WY": _s(("D-DDDDD", 0.5), ("DD-DDDD", 0.5)),       # county code, serial [W]
}

# Specialty plates of many states (organisations, universities, veterans), drawn beside a
# picture: short numeric or letter-number serials [W][A]. Weight: a share of all US serials.
US_SPECIALTY_SERIALS: tuple[tuple[str, float], ...] = (
    ("DDDDD", 0.012), ("LL DDDD", 0.008), ("DDDD LL", 0.006), ("DDDDL", 0.004),
)
# Four-character serials (some specialty plates) are left out on purpose: a strict format makes
# a read pass the agent's cut at the lower confidence, and four digits are what house numbers
# and shop signs show.
US_SERIAL_WEIGHT = 18.3  # the US strict formats' total weight (keeps the regions' balance)
US_VANITY_WEIGHT = 3.0  # vanity plates: up to 7 characters in most states [W]


def _us_formats() -> tuple[PlateFormat, ...]:
    """One PlateFormat per distinct US layout, weighted by the registrations that carry it."""
    weights: dict[tuple[str, str], float] = {}
    states: dict[tuple[str, str], list[str]] = {}
    for state, serials in US_STATE_SERIALS.items():
        total = sum(s.share for s in serials)
        for s in serials:
            key = (s.display, s.letters)
            weights[key] = weights.get(key, 0.0) + US_REGISTRATIONS_M[state] * s.share / total
            states.setdefault(key, []).append(state)
    scale = sum(weights.values())
    specialty = sum(w for _, w in US_SPECIALTY_SERIALS)
    out = []
    for (display, letters), w in sorted(weights.items(), key=lambda kv: -kv[1]):
        name = f"us.{display.replace(' ', '_')}" + ("" if letters == US_SERIAL_LETTERS else ".az")
        out.append(PlateFormat(name, "US", display, letters,
                               round(US_SERIAL_WEIGHT * (1 - specialty) * w / scale, 4),
                               states=tuple(states[(display, letters)]), leading_zero=False))
    for display, share in US_SPECIALTY_SERIALS:
        name = f"us.specialty.{display.replace(' ', '_')}"
        out.append(PlateFormat(name, "US", display, US_SERIAL_LETTERS,
                               round(US_SERIAL_WEIGHT * share, 4), leading_zero=False))
    out.append(PlateFormat("us.vanity", "US", "AAAAAAA", LETTERS, US_VANITY_WEIGHT,
                           strict=False))
    return tuple(out)


FORMATS: tuple[PlateFormat, ...] = _us_formats() + (
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
    """Formats of a region hint (``US``, ``us``, ``ca`` for a US state, ``BR``...); all if None.

    With a US state (``US-MO``) every US layout stays (cars from other states pass the
    camera), but the state's own come first, so a reading that fits several is named after
    the home state's layout."""
    key = region_key(region)
    chosen = tuple(f for f in FORMATS if f.region == key)
    state = us_state(region)
    if state:
        chosen = tuple(sorted(chosen, key=lambda f: state not in f.states))
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
