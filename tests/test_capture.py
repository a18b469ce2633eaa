"""Replay sources through real OpenCV video and image files."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from agent.capture.files import ImageFolderSource, VideoFileSource, open_source
from agent.capture.frames import SourceEnded, SourceError


def write_video(path, frames: int = 12):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10, (160, 120))
    assert writer.isOpened()
    for i in range(frames):
        writer.write(np.full((120, 160, 3), i * 10, np.uint8))
    writer.release()


def read_all(source):
    frames = []
    with pytest.raises(SourceEnded):
        while True:
            frames.append(source.read())
    return frames


def test_video_file_yields_every_frame_then_ends(tmp_path):
    write_video(tmp_path / "clip.mp4")
    frames = read_all(VideoFileSource(tmp_path / "clip.mp4"))
    assert [f.index for f in frames] == list(range(12))
    assert frames[0].image.shape == (120, 160, 3)


def test_looping_video_starts_again(tmp_path):
    write_video(tmp_path / "clip.mp4", frames=3)
    source = VideoFileSource(tmp_path / "clip.mp4", loop=True)
    assert len([source.read() for _ in range(7)]) == 7


def test_missing_and_corrupt_video_name_the_file(tmp_path):
    with pytest.raises(SourceError, match="nope.mp4 does not exist"):
        VideoFileSource(tmp_path / "nope.mp4")
    (tmp_path / "bad.mp4").write_bytes(b"\x00" * 100)
    with pytest.raises(SourceError, match="bad.mp4"):
        source = VideoFileSource(tmp_path / "bad.mp4")
        source.read()


def test_image_folder_skips_corrupt_and_zero_size_files(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.jpg"), np.zeros((20, 30, 3), np.uint8))
    (tmp_path / "1b.jpg").write_bytes(b"")
    (tmp_path / "1c.jpg").write_bytes(b"\xff\xd8\xff garbage")
    source = ImageFolderSource(tmp_path)
    assert [f.origin for f in read_all(source)] == ["0.jpg", "1.jpg", "2.jpg"]
    assert source.corrupt_frames == 2


def test_folder_with_only_corrupt_images_in_loop_mode_is_an_error_not_a_spin(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"junk")
    with pytest.raises(SourceError, match="no readable image"):
        ImageFolderSource(tmp_path, loop=True).read()


def test_unknown_kind_is_refused(tmp_path):
    with pytest.raises(SourceError, match="not supported"):
        open_source("v4l2", tmp_path, False)


def test_a_replay_that_fails_at_run_time_is_retried_and_logged_once_per_change(tmp_path, caplog):
    """Issue 14: a source failing at run time is retried with jittered backoff and logged once
    per change of state, not a traceback per try."""
    import logging
    import shutil

    from agent.capture.frames import NoFrame
    from agent.capture.health import Backoff
    from agent.capture.resilient import RetryingSource

    caplog.set_level(logging.INFO)
    write_video(tmp_path / "source.mp4")
    clip = tmp_path / "clip.mp4"
    source = RetryingSource(str(clip), lambda: VideoFileSource(clip), Backoff(0.01, 0.02))
    attempts = 0
    while attempts < 20:  # the file is not there yet: every read says "no frame", none raises
        with pytest.raises(NoFrame):
            source.read()
        attempts += 1
    shutil.copy(tmp_path / "source.mp4", clip)
    frames = []
    while len(frames) < 3:
        try:
            frames.append(source.read())
        except NoFrame:
            pass
    source.close()
    states = [r.getMessage().split(" source=")[0] for r in caplog.records if r.name == "agent.capture.health"]
    assert states == ["source lost", "source reconnecting", "source connected", "source closed"]
    assert not any(r.exc_info for r in caplog.records)
    assert source.health.snapshot()["reconnects"] == 1
