"""Can one core read a 1080p 25 fps camera stream in real time? The agent against a real RTSP stream.

    .venv/bin/python tools/bench_live.py runs/passes/hd.mp4 --seconds 60 [--core 0] [--no-gate] [--json]

Serves CLIP (re-encoded to H.264 once, as a camera sends it) from GStreamer's RTSP server
(tests/rtsp_serve.py, run by the system python, pinned to the other cores), pins this process
to one core (`--core`), and runs the agent's pipeline on the stream (capture with its grabber
thread, privacy masks, motion gate, recognition, tracking, outbox) for `--seconds`. Prints what
the camera sent and what became of it: frames grabbed by the capture thread (the stream's
rate), frames handed to recognition, frames skipped by the motion gate, frames recognised, the
ones dropped (newer frame came first, or the frame queue was full), reads, and this process's
CPU time over wall time (1.0 = the whole core). If CLIP.json is beside it (tools/synth/
make_passes.py), the passes whose plate was fully in view within the run are counted too.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.config.loader import parse_config  # noqa: E402
from agent.runtime.pipeline import build_pipeline  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def h264(clip: Path) -> Path:
    out = clip.with_name(clip.stem + "_h264.mp4")
    if not out.exists():
        subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-i", str(clip), "-c:v", "libx264",
                        "-preset", "veryfast", "-g", "25", "-pix_fmt", "yuv420p", str(out)], check=True)
    return out


def serve(clip: Path, port: int, cores: set[int]) -> subprocess.Popen:
    proc = subprocess.Popen(["/usr/bin/python3", str(ROOT / "tests" / "rtsp_serve.py"), str(port), "cam", str(clip)],
                            stdout=subprocess.PIPE, text=True, preexec_fn=lambda: os.sched_setaffinity(0, cores))
    line = proc.stdout.readline()
    if not line.startswith("READY"):
        proc.kill()
        raise SystemExit(f"RTSP server did not start: {line!r}")
    return proc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="The agent on a live RTSP stream, pinned to one core.")
    parser.add_argument("clip", type=Path)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--core", type=int, default=0, help="the core this process is pinned to")
    parser.add_argument("--fps", type=float, default=25.0, help="source.fps: most frames a second handed on")
    parser.add_argument("--no-gate", action="store_true", help="turn the motion gate off")
    parser.add_argument("--port", type=int, default=18654)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    others = set(os.sched_getaffinity(0)) - {args.core} or {args.core}
    server = serve(h264(args.clip), args.port, others)
    os.sched_setaffinity(0, {args.core})
    try:
        with tempfile.TemporaryDirectory() as state:
            config = parse_config(f"""
[unit]
state_dir = "{state}"
[source]
kind = "rtsp"
url = "rtsp://127.0.0.1:{args.port}/cam"
fps = {args.fps}
frame_queue = 2
[recognizer]
models_dir = "{ROOT / 'models'}"
[scene]
motion_gate = {str(not args.no_gate).lower()}
""")
            pipeline = build_pipeline(config)
            pipeline.start()
            cpu0 = _cpu()
            started = time.monotonic()
            time.sleep(args.seconds)
            wall = time.monotonic() - started
            cpu = _cpu() - cpu0
            stats = pipeline.stats()
            pipeline.shutdown()
    finally:
        server.kill()
        server.wait()
    source = stats.get("source", {})
    result = {
        "seconds": round(wall, 1), "core": args.core, "motion_gate": not args.no_gate,
        "stream_frames_grabbed": source.get("frames_grabbed"),
        "grabbed_fps": round((source.get("frames_grabbed") or 0) / wall, 2),
        "dropped_newer_frame_first": source.get("stale_dropped"),
        "handed_to_recognition": stats["frames_read"], "dropped_queue_full": stats["frames_dropped"],
        "skipped_by_motion_gate": stats["frames_motion_skipped"], "recognised": stats["frames_detector_run"],
        "corrupt": stats["frames_corrupt"], "reads": stats["reads_emitted"],
        "cpu_s": round(cpu, 2), "core_share": round(cpu / wall, 3), "source_state": source.get("state"),
        "reconnects": source.get("reconnects"),
    }
    truth_path = Path(str(args.clip) + ".json")
    if truth_path.exists():
        truth = json.loads(truth_path.read_text())
        horizon = (wall - 3.0) * truth["fps"]  # a track ends up to merge_window_s after its plate leaves
        result["passes_fully_in_view_during_run"] = sum(
            1 for p in truth["passes"] if p["last_full_frame"] is not None and p["last_full_frame"] < horizon)
    print(json.dumps(result, indent=None if args.json else 1))
    return 0


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


if __name__ == "__main__":
    sys.exit(main())
