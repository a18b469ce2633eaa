"""Replay sources: a video file or a folder of images, read through OpenCV.

These stand in for a camera in the demo, tests and offline runs; pacing to the
configured fps is done by the capture stage, not here, so a source only reads.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2

from agent.capture.frames import Frame, SourceEnded, SourceError, as_bgr

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


class VideoFileSource:
    def __init__(self, path: Path, loop: bool = False):
        self.path = Path(path)
        self.loop = loop
        self.corrupt_frames = 0
        self._index = 0
        if not self.path.is_file():
            raise SourceError(f"video file {self.path} does not exist")
        self._capture = self._open()

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(str(self.path))
        if not capture.isOpened():
            raise SourceError(f"video file {self.path} cannot be opened as video (corrupt or unsupported codec)")
        return capture

    def read(self) -> Frame:
        ok, image = self._capture.read()
        if not ok or image is None:
            if not self.loop:
                raise SourceEnded(str(self.path))
            self._capture.release()
            self._capture = self._open()
            ok, image = self._capture.read()
            if not ok or image is None:
                raise SourceError(f"video file {self.path} yields no frames")
        self._index += 1
        return Frame(image=as_bgr(image), captured_at=time.time(), index=self._index - 1,
                     origin=self.path.name)

    def close(self) -> None:
        self._capture.release()


class ImageFolderSource:
    def __init__(self, folder: Path, loop: bool = False):
        self.folder = Path(folder)
        self.loop = loop
        self.corrupt_frames = 0
        if not self.folder.is_dir():
            raise SourceError(f"image folder {self.folder} does not exist")
        self._files = sorted(p for p in self.folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not self._files:
            raise SourceError(f"image folder {self.folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
        self._position = 0
        self._index = 0

    def read(self) -> Frame:
        skipped = 0
        while True:
            if skipped > len(self._files):
                raise SourceError(f"image folder {self.folder}: no readable image in a whole pass")
            if self._position >= len(self._files):
                if not self.loop:
                    raise SourceEnded(str(self.folder))
                self._position = 0
            path = self._files[self._position]
            self._position += 1
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None or image.size == 0:
                self.corrupt_frames += 1
                skipped += 1
                log.warning("corrupt frame skipped source=%s file=%s", self.folder, path.name)
                continue
            self._index += 1
            return Frame(image=image, captured_at=time.time(), index=self._index - 1, origin=path.name)

    def close(self) -> None:
        self._files = []


def open_source(kind: str, path: Path, loop: bool) -> VideoFileSource | ImageFolderSource:
    """The source for a config's `source.kind`; live cameras and streams plug in here later."""
    if kind == "video_file":
        return VideoFileSource(path, loop=loop)
    if kind == "image_folder":
        return ImageFolderSource(path, loop=loop)
    raise SourceError(f"source kind {kind!r} is not supported")
