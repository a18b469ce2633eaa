"""Reading the text of one plate crop with our ONNX OCR model.

The model (tools/ocr_net.py) outputs per-column class probabilities; this module turns them
into a reading: CTC prefix beam search for the top-5 alternatives (hotlist matching and the
eval's top-5 need more than the best path), per-character confidences from the best path, and
the region format tables (agent.vision.plate_formats) to settle confusable glyphs (O/0, I/1,
B/8, S/5, Z/2, A/4) where a format allows only one of them; letter twins no format can settle
(W/M, V/U, M/H) join the top-5 instead. The format only wins where the model
itself is unsure: a reading that fits a strict format is preferred unless the free reading is
FORMAT_PRIOR times more probable, so a confident vanity plate is never "corrected". Where the
hint names a region whose table is exhaustive (Brazil: every car plate is ABC-1234 or
ABC1D23), a reading that fits a format always ranks above one that fits none: there a plain
bar in a digit position is a 1 however sure the model is that it saw an I, because the grey
plates' lettering draws both the same. Where the hint names a US state that issues no letter O
(``US-FL``), every round glyph is read as the zero that state's records hold. A reading that
stays unsure, or shows a horizontal motion blur, is read once more with the blur undone
(agent.vision.deblur).
"""
from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

from agent.vision import deblur
from agent.vision.crops import to_model_input
from agent.vision.models import ModelError, open_session
from agent.vision.plate_formats import (CHARSET, LETTER_TWINS, PlateFormat,
                                        formats_for, is_exhaustive, letters_read_as_digits)

log = logging.getLogger(__name__)

MODEL_NAME = "plate_ocr"
BEAM_WIDTH = 10
TOP_K = 5
PRUNE_PROB = 0.003  # classes below this probability in a column are not expanded
FORMAT_PRIOR = 8.0  # how much more likely a reading that fits a strict format is a priori
MAX_EXPAND = 5  # at most this many characters expanded per column (bounds the time)
# Conditioning a column on the classes a layout allows needs the model to give them some mass;
# below this (int8 outputs round small probabilities to 0) the column says nothing about them.
MIN_CLASS_MASS = 0.01
UNALIGNED_SWAP = 0.05  # odds of one format swap in a beam reading whose columns are unknown
# A letter twin (W/M, V/U, M/H) of the best reading joins the candidates with at least this
# share of its probability, so top-5 carries it where int8 rounded the model's doubt to 0.
TWIN_FLOOR = 0.01
TWIN_MAX_CONF = 0.95  # only glyphs the model was less sure of than this get a twin


@dataclass
class PlateText:
    """What the reader made of one crop."""

    text: str
    confidence: float
    char_confidences: list[float] = field(default_factory=list)
    candidates: list[tuple[str, float]] = field(default_factory=list)  # top-5, best first
    format: str | None = None  # name of the format table entry that matched


def best_path(probs: np.ndarray, charset: str = CHARSET) -> tuple[str, list[float], list[int]]:
    """Greedy CTC decoding of [T, C] probabilities: text, per-character confidence (the peak
    probability of the character over its columns) and the peak column of each character."""
    best = probs.argmax(axis=1)
    text, confs, cols = [], [], []
    prev = 0
    for t, k in enumerate(best):
        k = int(k)
        if k != 0 and k != prev:
            text.append(charset[k - 1])
            confs.append(float(probs[t, k]))
            cols.append(t)
        elif k != 0 and k == prev and probs[t, k] > confs[-1]:
            confs[-1] = float(probs[t, k])
            cols[-1] = t
        prev = k
    return "".join(text), confs, cols


def beam_search(probs: np.ndarray, charset: str = CHARSET, beam: int = BEAM_WIDTH,
                top_k: int = TOP_K) -> list[tuple[str, float]]:
    """CTC prefix beam search over [T, C] probabilities; returns up to ``top_k`` (text, p)."""
    # Only the few likely characters of each column are expanded (bounds the time: the
    # camera reads every frame's plates within a couple of milliseconds).
    likely = probs[:, 1:] > PRUNE_PROB
    beams: dict[str, list[float]] = {"": [1.0, 0.0]}  # prefix -> [p_blank, p_nonblank]
    for t in range(probs.shape[0]):
        row = probs[t]
        blank = float(row[0])
        cand = np.flatnonzero(likely[t])
        if cand.size == 0:  # a blank column: nothing new, every prefix ends in blank
            beams = {k: [(v[0] + v[1]) * blank, 0.0] for k, v in beams.items()}
            continue
        if cand.size > MAX_EXPAND:
            cand = cand[np.argsort(row[1:][cand])[-MAX_EXPAND:]]
        chars = [(charset[k], float(row[k + 1])) for k in cand.tolist()]
        nxt: dict[str, list[float]] = {}
        for prefix, (pb, pnb) in beams.items():
            total = pb + pnb
            entry = nxt.get(prefix)
            if entry is None:
                entry = nxt[prefix] = [0.0, 0.0]
            entry[0] += total * blank
            last = prefix[-1:]
            for ch, p in chars:
                key = prefix + ch
                ext = nxt.get(key)
                if ext is None:
                    ext = nxt[key] = [0.0, 0.0]
                if ch == last:
                    entry[1] += pnb * p  # a repeated character without a blank collapses
                    ext[1] += pb * p
                else:
                    ext[1] += total * p
        if len(nxt) > beam:
            nxt = dict(sorted(nxt.items(), key=lambda kv: kv[1][0] + kv[1][1],
                              reverse=True)[:beam])
        beams = nxt
    out = sorted(((k, v[0] + v[1]) for k, v in beams.items() if k), key=lambda kv: -kv[1])
    return out[:top_k]


def _format_variants(text: str, fmt: PlateFormat) -> list[tuple[str, list[int]]]:
    """Ways to make ``text`` fit ``fmt`` by swapping confusable glyphs; (variant, positions)."""
    variant = fmt.fit(text)
    if variant is None:
        return []
    swapped = [i for i, (a, b) in enumerate(zip(text, variant)) if a != b]
    return [(variant, swapped)]


def _class_mass(column: np.ndarray, fmt: PlateFormat, position: int, charset: str) -> float:
    """Probability the column gives to every character ``fmt`` allows at ``position``."""
    return float(sum(column[k + 1] for k, ch in enumerate(charset) if fmt.allows(position, ch)))


def _fold_unissued_letters(probs: np.ndarray, region: str | None, charset: str) -> np.ndarray:
    """Where the hint's jurisdiction never issues a letter, its column joins its digit twin's:
    the glyph can only be the digit there."""
    folds = letters_read_as_digits(region)
    if not folds:
        return probs
    probs = probs.copy()
    for letter, digit in folds.items():
        probs[:, charset.index(digit) + 1] += probs[:, charset.index(letter) + 1]
        probs[:, charset.index(letter) + 1] = 0.0
    return probs


def _swap_odds(probs: np.ndarray, text: str, variant: str, swapped: list[int],
               cols: list[int] | None, fmt: PlateFormat, conditioned: bool, charset: str,
               confs: list[float] | None) -> tuple[float, float, list[float] | None]:
    """How swapping glyphs to fit ``fmt`` re-weighs a reading: (odds for ranking, odds to
    report, per-character confidences). With the reading's columns (``cols``, the best path)
    the odds are the model's own for the new glyph against the old; without them each swap
    costs UNALIGNED_SWAP. ``conditioned`` (an exhaustive region): the reported odds take the
    new glyph's probability among the classes the layout allows, ranking keeps the model's."""
    rank = report = 1.0
    new_confs = list(confs) if confs else None
    for i in swapped:
        if cols is None:
            rank *= UNALIGNED_SWAP
            report *= UNALIGNED_SWAP
            continue
        column = probs[cols[i]]
        p_old = max(float(column[charset.index(text[i]) + 1]), 1e-6)
        p_new = max(float(column[charset.index(variant[i]) + 1]), 1e-6)
        rank *= p_new / p_old
        mass = _class_mass(column, fmt, i, charset) if conditioned else 0.0
        if mass >= MIN_CLASS_MASS:  # the layout fixes the class: condition on it
            p_new /= max(mass, p_new)
        report *= p_new / p_old
        if new_confs is not None:
            new_confs[i] = p_new
    return rank, report, new_confs


def _letter_twins(probs: np.ndarray, text: str, confs: list[float], cols: list[int],
                  charset: str) -> list[tuple[str, float, list[float]]]:
    """The best reading with one glyph swapped for its letter twin (W/M, V/U, M/H), where
    the model was not sure of it: (variant, its odds against the reading, confidences)."""
    out = []
    for i, ch in enumerate(text):
        if confs[i] >= TWIN_MAX_CONF:
            continue
        column = probs[cols[i]]
        p_old = max(float(column[charset.index(ch) + 1]), 1e-6)
        for twin in LETTER_TWINS.get(ch, ()):
            if twin not in charset:
                continue
            p_new = float(column[charset.index(twin) + 1])
            new_confs = list(confs)
            new_confs[i] = max(p_new, TWIN_FLOOR * confs[i])
            out.append((text[:i] + twin + text[i + 1:], max(p_new / p_old, TWIN_FLOOR),
                        new_confs))
    return out


@lru_cache(maxsize=64)
def _formats_by_length(region: str | None
                       ) -> tuple[dict[int, tuple[PlateFormat, ...]], dict[int, tuple[PlateFormat, ...]]]:
    """The region's strict and free formats, grouped by plate length (table order kept).

    Why: a reading can only fit, or be swapped into, a format of its own length, and the US
    tables hold over a hundred layouts; looking only at those of the right length made
    ``resolve`` several times cheaper with the same result (the first match in table order is
    still the first match)."""
    strict: dict[int, list[PlateFormat]] = defaultdict(list)
    free: dict[int, list[PlateFormat]] = defaultdict(list)
    for fmt in formats_for(region):
        (strict if fmt.strict else free)[len(fmt.pattern)].append(fmt)
    return ({n: tuple(v) for n, v in strict.items()}, {n: tuple(v) for n, v in free.items()})


def resolve(probs: np.ndarray, region: str | None = None,
            charset: str = CHARSET) -> PlateText:
    """Turn [T, C] probabilities into a PlateText using the region's format tables."""
    probs = _fold_unissued_letters(probs, region, charset)
    greedy_text, greedy_confs, greedy_cols = best_path(probs, charset)
    beams = beam_search(probs, charset)
    if greedy_text and greedy_text not in dict(beams):
        beams.append((greedy_text, float(np.prod(greedy_confs))))
    strict_by_len, free_by_len = _formats_by_length(region)
    exhaustive = is_exhaustive(region)
    # pool: text -> (probability reported, score, format name, char confidences); the score
    # is a tuple so that, in an exhaustive region, fitting a format outranks any probability.
    pool: dict[str, tuple[float, tuple[bool, float], str | None, list[float] | None]] = {}

    def add(text: str, prob: float, confs: list[float] | None,
            reported: float | None = None) -> None:
        fmt = next((f for f in strict_by_len.get(len(text), ()) if f.matches(text)), None)
        name = fmt.name if fmt else next(
            (f.name for f in free_by_len.get(len(text), ()) if f.matches(text)), None)
        score = (exhaustive and fmt is not None, prob * (FORMAT_PRIOR if fmt else 1.0))
        if text not in pool or pool[text][1] < score:
            pool[text] = (prob if reported is None else reported, score, name, confs)

    for text, prob in beams:
        aligned = text == greedy_text  # only the best path has its columns
        confs = greedy_confs if aligned else None
        add(text, prob, confs)
        for fmt in strict_by_len.get(len(text), ()):
            for variant, swapped in _format_variants(text, fmt):
                if swapped:
                    rank, report, v_confs = _swap_odds(
                        probs, text, variant, swapped, greedy_cols if aligned else None, fmt,
                        exhaustive, charset, confs)
                    add(variant, prob * rank, v_confs, prob * report)
    if greedy_text:
        for variant, p_ratio, v_confs in _letter_twins(probs, greedy_text, greedy_confs,
                                                       greedy_cols, charset):
            base = dict(beams).get(greedy_text, float(np.prod(greedy_confs)))
            add(variant, base * p_ratio, v_confs)
    if not pool:
        return PlateText("", 0.0, [], [], None)
    ranked = sorted(pool.items(), key=lambda kv: kv[1][1], reverse=True)
    text, (prob, _score, fmt_name, confs) = ranked[0]
    if confs is None:
        confs = [prob ** (1.0 / max(len(text), 1))] * len(text)
    candidates = [(t, round(min(1.0, v[0]), 6)) for t, v in ranked[:TOP_K]]
    return PlateText(text, round(min(1.0, prob), 6), [round(c, 6) for c in confs],
                     candidates, fmt_name)


class PlateReader:
    """The OCR stage: one ONNX session, one crop at a time (batch 1 is what the camera does)."""

    def __init__(self, session, entry: dict,
                 deblur_rule: deblur.DeblurRule = deblur.DeblurRule()):
        self._session = session
        self.deblur_rule = deblur_rule
        self.entry = entry
        self._input = session.get_inputs()[0].name
        self.charset = entry.get("charset", CHARSET)
        classes = session.get_outputs()[0].shape[-1]
        if isinstance(classes, int) and classes != len(self.charset) + 1:
            raise ModelError(f"OCR model {entry.get('file')} has {classes} classes but its "
                             f"manifest charset has {len(self.charset)} + blank")

    @classmethod
    def from_models(cls, models_dir: Path, threads: int = 1,
                    file_key: str = "file") -> "PlateReader":
        """Load the ``plate_ocr`` model named by ``models_dir/manifest.json`` (hash-checked)."""
        session, entry = open_session(Path(models_dir), MODEL_NAME, threads, file_key=file_key)
        return cls(session, entry)

    def probabilities(self, crop_bgr: np.ndarray) -> np.ndarray:
        """[T, C] class probabilities for one crop (BGR or grey)."""
        return self._run(to_model_input(crop_bgr))

    def _run(self, x: np.ndarray) -> np.ndarray:
        return self._session.run(None, {self._input: x})[0][0]

    def read(self, crop_bgr: np.ndarray, region: str | None = None,
             undo_blur: bool = True) -> PlateText:
        """Read one plate crop; ``region`` (US, BR, EU, GB, AR or a US state code) narrows the
        format tables used to settle confusable characters. A crop that shows a horizontal
        motion blur, or whose reading is unsure, is read again with the blur undone, and one
        still unsure once more with a tilted blur undone, where ``undo_blur``
        (``deblur_rule`` says when, and which reading wins)."""
        x = to_model_input(crop_bgr)
        result = self.read_input(x, region)
        if undo_blur:
            blur = deblur.estimate(x)
            result, _ = self.deblur_rule.decide(
                result, blur,
                lambda: self.read_input(deblur.wiener(x, blur.length), region),
                lambda: deblur.estimate_tilted(x),
                lambda tilt: self.read_input(deblur.wiener_tilted(x, tilt), region))
        if log.isEnabledFor(logging.DEBUG):
            log.debug("plate read confidence=%.3f format=%s", result.confidence, result.format)
        return result

    def read_input(self, x: np.ndarray, region: str | None = None) -> PlateText:
        """Read a model input (``to_model_input``'s [1, 1, 48, 144] float32) as it is."""
        return resolve(self._run(x), region, self.charset)

