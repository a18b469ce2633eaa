"""The assembled pipeline: real image files through OpenCV, real outbox and audit log.

The recognizer here is scripted (it reads the plate number painted into pixel (0, 0) of
each frame) because these tests are about the runtime (stages, queues, crashes,
shutdown), not about vision; the vision path is tested with the real models elsewhere.
"""
from __future__ import annotations

import pytest

from agent.config.loader import load_config
from agent.runtime.pipeline import build_pipeline
from helpers.pipeline import (FRAMES_PER_PLATE, PLATES, RecordingQueue, ScriptedRecognizer,
                              make_config)


def run_to_end(pipeline, timeout: float = 30) -> None:
    reads = RecordingQueue()
    pipeline.track.reads = pipeline.accept.reads = reads
    pipeline.start()
    assert pipeline.accept.join(timeout), "pipeline did not drain"
    pipeline.shutdown()
    return reads.emitted


def crash_once(obj, name: str, on_call: int, after: bool = False):
    """Make obj.name raise once, on its on_call-th call (after doing the work if `after`)."""
    original = getattr(obj, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == on_call and not after:
            raise RuntimeError(f"injected crash in {name}")
        result = original(*args, **kwargs)
        if calls["n"] == on_call and after:
            raise RuntimeError(f"injected crash in {name} after it did its work")
        return result

    setattr(obj, name, wrapper)


@pytest.mark.parametrize("stage, method, after", [
    ("track", "observe", False),        # tracker crashes on a sighting
    ("accept", "accept", False),        # outbox write fails before commit
    ("accept", "accept", True),         # crash after commit: the retried batch must not duplicate
])
def test_stage_crash_mid_stream_loses_no_read(tmp_path, stage, method, after):
    pipeline = build_pipeline(load_config(make_config(tmp_path)), recognizer=ScriptedRecognizer())
    target = pipeline.track.tracker if stage == "track" else pipeline.outbox
    crash_once(target, method, on_call=2, after=after)
    emitted = run_to_end(pipeline)
    restarted = {s.name: s.restarts for s in pipeline.stages}
    assert restarted[stage] == 1, restarted
    assert sorted(r.plate for r in emitted) == sorted(PLATES)
    # every read the tracker emitted is in the outbox, exactly once
    reopened = build_pipeline(load_config(tmp_path / "unit.toml"), recognizer=ScriptedRecognizer())
    try:
        assert reopened.outbox.read_ids() == {r.read_id for r in emitted}
    finally:
        reopened.outbox.close()
        reopened.audit.close()


def test_clean_run_counts_frames_and_reads(tmp_path):
    pipeline = build_pipeline(load_config(make_config(tmp_path)), recognizer=ScriptedRecognizer())
    emitted = run_to_end(pipeline)
    stats = pipeline.stats()
    assert stats["frames_read"] == len(PLATES) * FRAMES_PER_PLATE
    assert stats["frames_dropped"] == 0
    assert stats["reads_accepted"] == len(PLATES) == len(emitted)
    assert all(r.frames == FRAMES_PER_PLATE for r in emitted)


def test_corrupt_frame_in_folder_is_skipped_and_counted(tmp_path):
    config = make_config(tmp_path)
    (tmp_path / "frames" / "0004.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    pipeline = build_pipeline(load_config(config), recognizer=ScriptedRecognizer())
    emitted = run_to_end(pipeline)
    assert pipeline.stats()["frames_corrupt"] == 1
    assert sorted(r.plate for r in emitted) == sorted(PLATES)
