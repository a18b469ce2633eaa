"""`[source]` kinds: each names its input with its own key, and a value in the wrong one is refused
with the key named (a stream URL as a file path used to pass `config check` silently)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from agent.config.loader import ConfigError, parse_config

ROOT = Path(__file__).resolve().parents[1]


def problems_of(text: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        parse_config(text, base_dir=Path("/tmp"))
    return [str(p) for p in info.value.problems]


def test_rtsp_kind_with_a_file_path_is_refused_naming_the_key():
    problems = problems_of('[source]\nkind = "rtsp"\npath = "/data/clip.mp4"\n')
    assert "source.path: is not used by source kind 'rtsp', which reads source.url" in problems
    assert "source.url: is required for source kind 'rtsp'" in problems
    [problem] = problems_of('[source]\nkind = "rtsp"\nurl = "/data/clip.mp4"\n')
    assert problem.startswith("source.url: is a file path, not a rtsp:// or rtsps:// URL")


def test_video_file_kind_with_a_url_is_refused_naming_the_key():
    [problem] = problems_of('[source]\nkind = "video_file"\npath = "rtsp://10.0.0.5/stream1"\n')
    assert problem.startswith("source.path: is a rtsp:// URL, not a file or folder")
    assert 'source.kind = "rtsp"' in problem
    assert "source.url: is not used by source kind 'video_file', which reads source.path" in problems_of(
        '[source]\nkind = "video_file"\npath = "a.mp4"\nurl = "rtsp://10.0.0.5/s"\n')


def test_each_live_kind_is_accepted_with_its_own_key():
    rtsp = parse_config('[source]\nkind = "rtsp"\nurl = "rtsp://10.0.0.5:554/s"\nusername = "u"\npassword = "p"\n')
    assert rtsp.source.url == "rtsp://10.0.0.5:554/s"
    assert parse_config('[source]\nkind = "http_mjpeg"\nurl = "https://cam/video.mjpg"\n').source.kind == "http_mjpeg"
    assert parse_config('[source]\nkind = "v4l2"\ndevice = "/dev/video2"\nwidth = 1920\nheight = 1080\n'
                        ).source.device == "/dev/video2"
    assert parse_config('[source]\nkind = "v4l2"\ndevice = "0"\n').source.device == "0"


def test_stream_url_scheme_and_embedded_credentials_are_refused():
    [wrong] = problems_of('[source]\nkind = "http_mjpeg"\nurl = "rtsp://cam/s"\n')
    assert wrong.startswith("source.url: is a rtsp: URL, not a http:// or https:// URL")
    [creds] = problems_of('[source]\nkind = "rtsp"\nurl = "rtsp://admin:hunter2@cam/s"\n')
    assert creds.startswith("source.url: holds credentials") and "hunter2" not in creds
    assert problems_of('[source]\nkind = "v4l2"\ndevice = "video0"\n') == [
        "source.device: 'video0' is not a V4L2 device (/dev/videoN or an index)"]


def test_polygons_are_checked_point_by_point():
    problems = problems_of('[source]\npath = "a.mp4"\n[scene]\nroi = [[0, 0], [1, 0], [1, 1.5]]\n'
                           'privacy_masks = [[[0, 0], [1, 0]]]\n')
    assert problems == ["scene.roi[2]: [1.0, 1.5] is not an [x, y] point with both between 0 and 1 "
                        "(fractions of the frame)",
                        "scene.privacy_masks[0]: has 2 point(s); a polygon needs at least 3"]


def test_config_check_finds_a_missing_replay_file_and_a_folder_given_as_a_file(tmp_path):
    config = tmp_path / "unit.toml"
    config.write_text(f'[source]\nkind = "video_file"\npath = "{tmp_path / "nope.mp4"}"\n')
    result = subprocess.run([sys.executable, "-m", "agent", "config", "check", str(config)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and f"source.path: video file {tmp_path / 'nope.mp4'} does not exist" in result.stderr
    config.write_text(f'[source]\nkind = "video_file"\npath = "{tmp_path}"\n')
    result = subprocess.run([sys.executable, "-m", "agent", "config", "check", str(config)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2 and "is not a file (video file expected)" in result.stderr


def test_config_show_redacts_the_stream_password(tmp_path):
    config = tmp_path / "unit.toml"
    config.write_text('[source]\nkind = "rtsp"\nurl = "rtsp://cam/s"\nusername = "op"\npassword = "hunter2"\n')
    result = subprocess.run([sys.executable, "-m", "agent", "config", "show", str(config)],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0 and "hunter2" not in result.stdout


def test_capture_test_on_an_unreachable_camera_says_so_and_exits_1(tmp_path):
    import json

    from stream_servers import free_port

    config = tmp_path / "unit.toml"
    config.write_text(f'[source]\nkind = "rtsp"\nurl = "rtsp://127.0.0.1:{free_port()}/cam"\n'
                      'username = "op"\npassword = "hunter2"\nstall_timeout_s = 0.5\n')
    result = subprocess.run([sys.executable, "-m", "agent", "capture", "test", "--config", str(config),
                             "--seconds", "1", "--no-plates", "--json"], capture_output=True, text=True, cwd=ROOT,
                            timeout=60)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["frames"] == 0 and report["problems"] and "no frame" in report["problems"][0]
    assert "hunter2" not in result.stdout + result.stderr


def test_stream_urls_get_credentials_only_when_opened_and_are_redacted_everywhere_else():
    from agent.capture.urls import redact, with_credentials

    url = with_credentials("rtsp://10.0.0.5:554/Streaming/101", "op", "p@ss:w/rd#1")
    assert url == "rtsp://op:p%40ss%3Aw%2Frd%231@10.0.0.5:554/Streaming/101"
    assert redact(url) == "rtsp://***@10.0.0.5:554/Streaming/101"
    assert with_credentials("rtsp://[fe80::1]:554/s", "op", "x") == "rtsp://op:x@[fe80::1]:554/s"
    assert redact("http://cam/video.mjpg?user=op&token=abc") == "http://cam/video.mjpg?user=***&token=***"
    assert with_credentials("rtsp://cam/s", None, "ignored") == "rtsp://cam/s"
