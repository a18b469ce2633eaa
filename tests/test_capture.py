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
