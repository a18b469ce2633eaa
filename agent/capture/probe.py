"""`plategate capture test`: is the camera aimed, focused and exposed well enough to read plates?

Callable as functions (the serial console's `camera test` and `camera snapshot` use them):

- `probe(config, seconds, recognizer=None, snapshot=None) -> ProbeReport`: grab frames from the
  configured source for a few seconds (through the same masked source the agent reads) and
  report the achieved fps, resolution, focus (variance of the Laplacian inside the region of
  interest), brightness and clipped shares, the source's state, and the plates read (each with
  `above_cut`: whether that frame's read passes the cut alone; weaker reads that fit a plate
  format are listed too, as the tracker counts them when several frames agree);
- `grab_snapshot(config, recognizer=None) -> bytes`: one fresh frame, masked, with the overlays;
- `snapshot_jpeg(image, scene, hits) -> bytes`: one frame with the region of interest, the
  privacy masks and the detections drawn, as JPEG bytes. The frame it draws on has already had
  the masks blacked out (every frame from `open_source` has), so a snapshot never shows what a
  mask hides.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import cv2
import numpy as np

from agent.atomic import write_atomic
from agent.capture.frames import Frame, NoFrame, SourceEnded, SourceError
from agent.capture.gate import SceneRecognizer
from agent.capture.scene import RegionOfInterest, polygon_pixels
from agent.capture.sources import open_source, source_name
from agent.config.schema import REPLAY_KINDS, DeviceConfig, SceneConfig
from agent.tracking.passes import weak_cut
from agent.vision.recognizer import is_confident

log = logging.getLogger(__name__)

RECOGNIZE_EVERY_S = 0.5   # plates are read on about two frames a second while probing
ROI_COLOUR = (0, 220, 0)
MASK_COLOUR = (0, 0, 230)
PLATE_COLOUR = (0, 220, 255)


@dataclass
class ProbeReport:
    source: str                       # credentials redacted
    kind: str
    seconds: float                    # grabbing time, counted from the first frame
    frames: int
    fps: float
    width: int | None
    height: int | None
    focus: float | None               # variance of the Laplacian in the ROI; higher is sharper
    brightness: float | None          # mean grey level in the ROI, 0-255
    dark_share: float | None          # share of ROI pixels at or below 5 (crushed shadows)
    bright_share: float | None        # share of ROI pixels at or above 250 (blown highlights)
    connect_s: float | None = None    # from opening the source to its first frame
    plates: list[dict] = field(default_factory=list)
    source_status: dict = field(default_factory=dict)
    snapshot: str | None = None
    problems: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)


def image_quality(image: np.ndarray, roi: RegionOfInterest) -> dict[str, float]:
    """Focus, brightness and clipping inside the region of interest."""
    height, width = image.shape[:2]
    (x0, y0, x1, y1), _, mask = roi.geometry(width, height)
    grey = cv2.cvtColor(image[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
    inside = mask > 0
    laplacian = cv2.Laplacian(grey, cv2.CV_64F)
    values = grey[inside]
    return {"focus": round(float(laplacian[inside].var()), 1), "brightness": round(float(values.mean()), 1),
            "dark_share": round(float((values <= 5).mean()), 4), "bright_share": round(float((values >= 250).mean()), 4)}


def snapshot_jpeg(image: np.ndarray, scene: SceneConfig, hits: Sequence[Any] = (), quality: int = 90) -> bytes:
    """The (already masked) frame with the ROI, the masks' outlines and the plates drawn on a copy."""
    canvas = image.copy()
    height, width = canvas.shape[:2]
    thickness = max(2, width // 640)
    for polygon in scene.privacy_masks:
        pixels = polygon_pixels(polygon, width, height)
        cv2.polylines(canvas, [pixels], True, MASK_COLOUR, thickness)
        x, y = pixels[0, 0]
        cv2.putText(canvas, "privacy mask", (int(x) + 4, int(y) + 18), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                    MASK_COLOUR, 1, cv2.LINE_AA)
    if scene.roi:
        cv2.polylines(canvas, [polygon_pixels(scene.roi, width, height)], True, ROI_COLOUR, thickness)
    for hit in hits:
        x, y, w, h = (int(v) for v in hit.box)
        cv2.rectangle(canvas, (x, y), (x + w, y + h), PLATE_COLOUR, thickness)
        cv2.putText(canvas, f"{hit.text} {hit.confidence:.2f}", (x, max(12, y - 6)), cv2.FONT_HERSHEY_SIMPLEX,
                    0.6, PLATE_COLOUR, 2, cv2.LINE_AA)
    ok, data = cv2.imencode(".jpg", canvas, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("the snapshot could not be encoded as JPEG")
    return data.tobytes()


def probe(config: DeviceConfig, seconds: float = 5.0, recognizer: Any = None,
          snapshot: Path | None = None) -> ProbeReport:
    """Grab frames for `seconds` and report; `recognizer` None skips reading plates."""
    roi = RegionOfInterest(config.scene.roi)
    reader = SceneRecognizer(recognizer, roi) if recognizer is not None else None
    report = ProbeReport(source=source_name(config.source), kind=config.source.kind, seconds=seconds, frames=0,
                         fps=0.0, width=None, height=None, focus=None, brightness=None, dark_share=None,
                         bright_share=None)
    plates: dict[str, dict] = {}
    last: Frame | None = None
    shot: tuple[Frame, list[Any]] | None = None  # the last frame read for plates, with its plates
    source = open_source(config.source, config.scene)
    started = first_at = time.monotonic()
    deadline = started + seconds + max(seconds, 2 * config.source.stall_timeout_s)  # connecting is not grabbing
    next_read = next_frame = started
    paced = config.source.kind in REPLAY_KINDS  # a replay is read at the agent's pace, not decode speed
    weak = weak_cut(config.tracker, config.recognizer)
    try:
        while time.monotonic() < (first_at + seconds if report.frames else deadline):
            if paced:
                time.sleep(max(0.0, next_frame - time.monotonic()))
                next_frame = max(next_frame + 1.0 / config.source.fps, time.monotonic())
            try:
                frame = source.read()
            except NoFrame:
                continue
            except (SourceEnded, SourceError) as exc:
                if report.frames == 0:
                    report.problems.append(f"source gave no frame: {exc}")
                break
            if report.frames == 0:
                first_at = time.monotonic()
                report.connect_s = round(first_at - started, 2)
            report.frames += 1
            last = frame
            if reader is not None and time.monotonic() >= next_read:
                next_read = time.monotonic() + RECOGNIZE_EVERY_S
                hits = [h for h in reader.recognize(frame.image) if is_confident(h, config.recognizer) or weak(h)]
                shot = (frame, hits)
                for hit in hits:
                    seen = plates.get(hit.text)
                    if seen is None or hit.confidence > seen["confidence"]:
                        plates[hit.text] = {"text": hit.text, "confidence": round(float(hit.confidence), 3),
                                            "box": [int(v) for v in hit.box],
                                            "above_cut": is_confident(hit, config.recognizer)}
        elapsed = time.monotonic() - first_at
        report.source_status = source.status()
    finally:
        source.close()
    if last is None:
        if not report.problems:
            report.problems.append(f"no frame from {report.source} within {deadline - started:g} s")
        return report
    report.fps = round((report.frames - 1) / elapsed, 2) if report.frames > 1 and elapsed > 0 else 0.0
    report.height, report.width = last.image.shape[:2]
    quality = image_quality(last.image, roi)
    report.focus, report.brightness = quality["focus"], quality["brightness"]
    report.dark_share, report.bright_share = quality["dark_share"], quality["bright_share"]
    report.plates = sorted(plates.values(), key=lambda p: -p["confidence"])
    if snapshot is not None:
        frame, hits = shot if shot is not None else (last, [])
        write_atomic(Path(snapshot), snapshot_jpeg(frame.image, config.scene, hits))
        report.snapshot = str(snapshot)
    return report


def grab_snapshot(config: DeviceConfig, recognizer: Any = None, timeout_s: float = 10.0) -> bytes:
    """One masked frame from the configured source with the overlays drawn, as JPEG bytes
    (the serial console's `camera snapshot`). Raises SourceError when no frame comes in time."""
    source = open_source(config.source, config.scene)
    deadline = time.monotonic() + timeout_s
    try:
        while True:
            try:
                frame = source.read()
                break
            except NoFrame:
                if time.monotonic() > deadline:
                    raise SourceError(f"no frame from {source_name(config.source)} within {timeout_s:g} s") from None
            except SourceEnded:
                raise SourceError(f"{source_name(config.source)} ended before a frame") from None
    finally:
        source.close()
    hits = []
    if recognizer is not None:
        reader = SceneRecognizer(recognizer, RegionOfInterest(config.scene.roi))
        hits = [h for h in reader.recognize(frame.image) if is_confident(h, config.recognizer)]
    return snapshot_jpeg(frame.image, config.scene, hits)
