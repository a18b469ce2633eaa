"""Per-pass accuracy of the agent on clips with ground truth: one event per pass, right text?

    .venv/bin/python tools/bench_passes.py runs/passes/day.mp4 [more.mp4 ...] [--no-gate] [--json]

Each clip's OUT.json (tools/synth/make_passes.py, tools/synth/make_real_clip.py) lists its
passes. Frames go through the agent's own path: privacy masks and region of interest from
the config, the motion gate, the Recognizer (detector + OCR), the confidence cut and the
edge rule (agent.runtime.stages.frame_sightings), and the PassTracker; time is the frame's
clip time (index / fps), frames are read as fast as the CPU allows. Prints, per clip:

- passes (N), events, matched passes, missed, duplicate and spurious events;
- events by the rule that let the pass count (`evidence`: frame, agreement, detection), and the
  wrong and spurious events with theirs;
- per-pass correct text: the vote (what the agent emits) and, for comparison on the same
  tracks, the most confident single frame (what the earlier tracker kept);
- single-frame accuracy: the share of accepted frame reads whose text is the pass's plate;
- frames, frames recognised and skipped by the motion gate, CPU seconds (this process, decoding
  included) and CPU seconds per minute of video.

An event belongs to the pass whose plate was in view during the event's time span (0.5 s
slack) and whose text is nearest to the event's.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.capture.files import VideoFileSource  # noqa: E402
from agent.capture.frames import Frame, SourceEnded  # noqa: E402
from agent.capture.scene import PrivacyMask  # noqa: E402
from agent.config.loader import parse_config  # noqa: E402
from agent.config.schema import DeviceConfig  # noqa: E402
from agent.reads import ReadEvent  # noqa: E402
from agent.resources import bundled_models_dir, models_dir_arg  # noqa: E402
from agent.runtime.pipeline import scene_recognizer  # noqa: E402
from agent.runtime.stages import frame_sightings  # noqa: E402
from agent.tracking.passes import EVIDENCE, PassTracker, _Pass, weak_cut  # noqa: E402
from agent.tracking.tracker import Sighting  # noqa: E402
from agent.tracking.vote import distance  # noqa: E402
from agent.vision.recognizer import Recognizer, is_confident  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SLACK_S = 0.5


class RecordingTracker(PassTracker):
    """The agent's tracker, remembering each event's sightings for the single-frame figures."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.sightings_of: dict[str, list[Sighting]] = {}

    def _to_read(self, track: _Pass) -> ReadEvent:
        read = super()._to_read(track)
        self.sightings_of[read.read_id] = list(track.sightings)
        return read


@dataclass
class ClipRun:
    events: list[ReadEvent] = field(default_factory=list)
    sightings_of: dict[str, list[Sighting]] = field(default_factory=dict)
    frames: int = 0
    recognised: int = 0
    skipped: int = 0
    cpu_s: float = 0.0
    wall_s: float = 0.0


def run_clip(clip: Path, config: DeviceConfig, recognizer: Recognizer, fps: float) -> ClipRun:
    clock = {"t": 0.0}
    scene = scene_recognizer(config, recognizer)
    scene.clock = lambda: clock["t"]
    mask = PrivacyMask(config.scene.privacy_masks)
    settings = config.tracker
    tracker = RecordingTracker(config.unit.camera_id, settings.merge_window_s, settings.max_track_s,
                               settings.min_frames, agreeing_frames=settings.agreeing_frames,
                               min_confidence=config.recognizer.min_confidence,
                               stopped_timeout_s=settings.stopped_timeout_s,
                               detected_frames=settings.detected_frames,
                               detected_min_score=settings.detected_min_score)
    weak = weak_cut(settings, config.recognizer)
    run = ClipRun()
    source = VideoFileSource(clip)
    cpu0, wall0 = time.process_time(), time.monotonic()
    try:
        while True:
            try:
                frame = source.read()
            except SourceEnded:
                break
            t = frame.index / fps
            clock["t"] = t
            frame = Frame(image=mask.apply(frame.image), captured_at=t, index=frame.index, origin=clip.name,
                          monotonic=t)
            for sighting in frame_sightings(frame, scene, lambda hit: is_confident(hit, config.recognizer),
                                            weak):
                run.events += tracker.observe(sighting)
            run.events += tracker.flush(t)
            run.frames += 1
        run.events += tracker.flush(run.frames / fps, force=True)
    finally:
        source.close()
    run.cpu_s, run.wall_s = time.process_time() - cpu0, time.monotonic() - wall0
    run.recognised, run.skipped = scene.frames_recognized, scene.frames_skipped
    run.sightings_of = tracker.sightings_of
    return run


def score(run: ClipRun, truth: dict) -> dict:
    fps = truth["fps"]
    passes = [p for p in truth["passes"] if p["first_full_frame"] is not None]
    matched: dict[int, list[ReadEvent]] = {}
    spurious: list[ReadEvent] = []
    for event in run.events:
        start, end = event.seen_at - SLACK_S, (event.last_seen or event.seen_at) + SLACK_S
        near = [i for i, p in enumerate(passes) if p["first_frame"] / fps <= end and p["last_frame"] / fps >= start]
        if not near:
            spurious.append(event)
            continue
        best = min(near, key=lambda i: distance(passes[i]["text"], event.plate))
        matched.setdefault(best, []).append(event)
    correct = single_best = frames_right = frames_total = 0
    wrong = []
    for i, events in matched.items():
        text = passes[i]["text"]
        first = events[0]
        correct += first.plate == text
        if first.plate != text:
            wrong.append({"truth": text, "read": first.plate, "frames": first.frames, "evidence": first.evidence,
                          "candidates": [c.text for c in first.candidates]})
        sightings = run.sightings_of.get(first.read_id, [])
        if sightings:  # what the earlier tracker kept: the most confident frame (a weak one if no other)
            single_best += max(sightings, key=lambda s: s.confidence).text == text
        for event in events:
            for s in run.sightings_of.get(event.read_id, []):
                if s.weak:
                    continue  # single-frame figures count only reads that pass the cut alone
                frames_total += 1
                frames_right += s.text == text
    n = len(passes)
    minutes = run.frames / fps / 60
    missed = [{k: passes[i][k] for k in ("text", "lane", "speed_px_s", "stop_s", "first_full_frame",
                                         "last_full_frame")} for i in range(n) if i not in matched]
    duplicated = [{"truth": passes[i]["text"],
                   "events": [(e.plate, round(e.seen_at * fps), round((e.last_seen or e.seen_at) * fps), e.frames)
                              for e in events]}
                  for i, events in matched.items() if len(events) > 1]
    return {
        "passes": n, "events": len(run.events), "matched": len(matched), "missed": n - len(matched),
        "duplicates": sum(len(e) - 1 for e in matched.values()), "spurious": len(spurious),
        "by_evidence": {kind: sum(e.evidence == kind for e in run.events) for kind in EVIDENCE},
        "wrong_by_evidence": {kind: sum(w["evidence"] == kind for w in wrong) for kind in EVIDENCE},
        "spurious_events": [{"read": e.plate, "frames": e.frames, "evidence": e.evidence,
                             "at_frame": round(e.seen_at * fps)} for e in spurious],
        "correct_vote": correct, "correct_vote_pct": round(100 * correct / max(n, 1), 1),
        "correct_best_frame": single_best, "correct_best_frame_pct": round(100 * single_best / max(n, 1), 1),
        "single_frame_reads": frames_total,
        "single_frame_pct": round(100 * frames_right / max(frames_total, 1), 1),
        "frames": run.frames, "frames_recognised": run.recognised, "frames_skipped_by_motion": run.skipped,
        "cpu_s": round(run.cpu_s, 2), "cpu_s_per_video_minute": round(run.cpu_s / max(minutes, 1e-9), 2),
        "wall_s": round(run.wall_s, 2), "video_s": round(run.frames / fps, 1), "wrong": wrong,
        "missed_passes": missed, "duplicated_passes": duplicated,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Per-pass accuracy (events vs passes, voted text) on clips "
                                                 "with a ground-truth OUT.json.")
    parser.add_argument("clips", nargs="+", type=Path, help="clips (each with CLIP.json beside it)")
    parser.add_argument("--config", type=Path, help="device config for recognizer, scene and tracker settings "
                                                    "(default: the schema's defaults)")
    parser.add_argument("--models", type=models_dir_arg, default=bundled_models_dir(),
                        help="models folder")
    parser.add_argument("--no-gate", action="store_true", help="turn the motion gate off")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    text = args.config.read_text() if args.config else '[source]\npath = "clip.mp4"  # the clips replace it\n'
    base_dir = args.config.resolve().parent if args.config else ROOT
    config = parse_config(_with_gate_off(text) if args.no_gate else text, base_dir=base_dir)
    recognizer = Recognizer.from_config(dataclasses.replace(config.recognizer, models_dir=args.models))
    results = {}
    for clip in args.clips:
        truth = json.loads(Path(str(clip) + ".json").read_text())
        results[str(clip)] = score(run_clip(clip, config, recognizer, truth["fps"]), truth)
    if args.json:
        print(json.dumps(results, indent=1))
    else:
        for clip, r in results.items():
            print(f"{clip}: passes {r['passes']}, events {r['events']} (matched {r['matched']}, missed "
                  f"{r['missed']}, duplicates {r['duplicates']}, spurious {r['spurious']}); correct text "
                  f"{r['correct_vote_pct']}% voted, {r['correct_best_frame_pct']}% best single frame; "
                  f"single-frame reads {r['single_frame_pct']}% of {r['single_frame_reads']}; frames "
                  f"{r['frames']} (recognised {r['frames_recognised']}, skipped {r['frames_skipped_by_motion']}); "
                  f"CPU {r['cpu_s']} s = {r['cpu_s_per_video_minute']} s per video minute; events by evidence "
                  f"{r['by_evidence']}, wrong by evidence {r['wrong_by_evidence']}")
            for w in r["wrong"]:
                print(f"   wrong: {w}")
            for m in r["missed_passes"]:
                print(f"   missed: {m}")
            for d in r["duplicated_passes"]:
                print(f"   duplicated: {d}")
            for e in r["spurious_events"]:
                print(f"   spurious: {e}")
    return 0


def _with_gate_off(text: str) -> str:
    if "[scene]" in text:
        return text.replace("[scene]", "[scene]\nmotion_gate = false", 1)
    return text + "\n[scene]\nmotion_gate = false\n"


if __name__ == "__main__":
    sys.exit(main())
