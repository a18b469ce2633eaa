"""The agreed text of one vehicle pass: a per-character vote over all of its frames.

Why a vote and not the most confident frame: each frame misreads a different character
(motion blur, a reflection, a bolt head read as a dot), and the OCR is often confidently
wrong on one of them. Aligning the frames' reads character by character and letting each
character be decided by the confidence-weighted majority recovers the plate from frames that
are each a little wrong. Reads of different lengths (a character lost or doubled) are
aligned by edit distance to a reference of the winning length, so one short read cannot
shift every character after its gap.
"""
from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Sequence

LENGTH_SHARE = 0.4     # a longer length wins if it has this share of the leading length's weight
OUTLIER_EDITS = 0.5    # reads further than this share of the reference's length stay out of the vote
PER_POSITION = 3       # characters kept per position when listing candidates


@dataclass(frozen=True)
class Reading:
    """One frame's read of the plate."""

    text: str
    confidence: float
    char_confidences: tuple[float, ...] = ()

    def char_confidence(self, i: int) -> float:
        if len(self.char_confidences) == len(self.text):
            return float(self.char_confidences[i])
        return float(self.confidence)


@dataclass(frozen=True)
class Consensus:
    text: str
    confidence: float
    candidates: tuple[tuple[str, float], ...]   # top-k, best first; candidates[0] is `text`
    voters: int                                 # reads that took part in the vote


def align(reference: str, text: str) -> list[int | None]:
    """For each position of `reference`, the index of the character of `text` aligned to it
    (None where `text` has a gap), by a minimum edit-distance alignment."""
    n, m = len(reference), len(text)
    cost = [[0] * (m + 1) for _ in range(n + 1)]
    for i in range(n + 1):
        cost[i][0] = i
    for j in range(m + 1):
        cost[0][j] = j
    for i in range(1, n + 1):
        for j in range(1, m + 1):
            cost[i][j] = min(cost[i - 1][j] + 1, cost[i][j - 1] + 1,
                             cost[i - 1][j - 1] + (reference[i - 1] != text[j - 1]))
    out: list[int | None] = [None] * n
    i, j = n, m
    while i > 0 and j > 0:
        if cost[i][j] == cost[i - 1][j - 1] + (reference[i - 1] != text[j - 1]):
            out[i - 1] = j - 1
            i, j = i - 1, j - 1
        elif cost[i][j] == cost[i - 1][j] + 1:
            i -= 1
        else:
            j -= 1
    return out



def winning_length(readings: Sequence[Reading]) -> int:
    """The plate's length: the confidence-weighted most common, but a longer length with a fair
    share of that weight wins (a plate half in view reads short; it must not beat the whole)."""
    weight: dict[int, float] = {}
    for r in readings:
        weight[len(r.text)] = weight.get(len(r.text), 0.0) + r.confidence
    top = max(weight.values())
    return max(length for length, w in weight.items() if w >= LENGTH_SHARE * top)


def vote(readings: Sequence[Reading], top_k: int = 5) -> Consensus:
    """Consensus of the readings (at least one, none empty)."""
    readings = [r for r in readings if r.text]
    if not readings:
        raise ValueError("nothing to vote on")
    length = winning_length(readings)
    reference = max((r for r in readings if len(r.text) == length), key=lambda r: r.confidence).text
    tallies: list[dict[str, float]] = [{} for _ in range(length)]
    voters = 0
    for r in readings:
        mapping = align(reference, r.text)
        if _distance(reference, r.text, mapping) > OUTLIER_EDITS * length:
            continue
        voters += 1
        for i, k in enumerate(mapping):
            if k is not None:
                ch = r.text[k]
                tallies[i][ch] = tallies[i].get(ch, 0.0) + r.char_confidence(k)
    position_probs = [sorted(((ch, w / voters) for ch, w in t.items()), key=lambda kv: -kv[1])[:PER_POSITION]
                      for t in tallies]
    candidates = _best_strings(position_probs, top_k)
    text, confidence = candidates[0]
    return Consensus(text=text, confidence=confidence, candidates=tuple(candidates), voters=voters)


def distance(a: str, b: str) -> int:
    """Edit distance (insertions, deletions, substitutions) between two reads."""
    return _distance(a, b, align(a, b))


def _distance(reference: str, text: str, mapping: list[int | None]) -> int:
    matched = [k for k in mapping if k is not None]
    substitutions = sum(1 for i, k in enumerate(mapping) if k is not None and reference[i] != text[k])
    return (len(reference) - len(matched)) + (len(text) - len(matched)) + substitutions


def _best_strings(position_probs: list[list[tuple[str, float]]], top_k: int) -> list[tuple[str, float]]:
    """The top_k strings by the product of per-position probabilities (a position no read
    covered contributes '?' at probability 0)."""
    beams: list[tuple[float, str]] = [(1.0, "")]
    for options in position_probs:
        if not options:
            options = [("?", 0.0)]
        grown = [(p * q, s + ch) for p, s in beams for ch, q in options]
        beams = heapq.nlargest(top_k, grown, key=lambda b: (b[0], b[1]))
    return [(s, round(p, 4)) for p, s in beams]
