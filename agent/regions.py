"""The regions a camera can stand in, as the plate format tables (agent/vision/plate_formats.py)
and the device config's `recognizer.region` know them.

A module of its own, outside agent/vision and agent/config, so that the config schema can
validate a region hint without the config package depending on the vision package (which
reads its defaults from the config schema).
"""
from __future__ import annotations

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
