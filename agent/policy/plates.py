"""Plate text normalisation shared by hotlist matching and keyed hashing.

A plate counts as the same plate after upper-casing and removing spaces and dashes
(the rule DESIGN.md uses for accuracy too), so "ab-123 c" on a hotlist matches a read
of "AB123C", and a destination's HMAC of a plate is stable across OCR spacing.
"""
from __future__ import annotations


def normalise_plate(text: str) -> str:
    return "".join(ch for ch in text.upper() if ch not in " -\t")
