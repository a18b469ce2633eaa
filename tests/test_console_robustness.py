"""The console under a hostile line: noise while the agent works, a cable pulled mid-transfer,
half-typed commands, a line nobody reads; and the snapshot's time on a 115200-baud line.
"""
from __future__ import annotations

import json
import os
import random
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from console_rig import TOPIC, Bench, running_bench
from agent.console.client import NoAnswer, download
from agent.console.port import open_port

pytestmark = pytest.mark.integration
NOISE_S = float(os.environ.get("PLATEGATE_NOISE_S", "60"))  # the acceptance run is 60 s
BAUD = 115200


@pytest.fixture
def bench(tmp_path, mosquitto, dept):
    with running_bench(tmp_path, mosquitto, dept) as bench:
        yield bench


class Drain:
    """Reads (and counts) whatever the console sends to the client end, so nothing backs up."""

    def __init__(self, port_path: str):
        self.port = open_port(port_path, BAUD, timeout=0.1)
        self.received = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self.received += self.port.read(4096)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.port.close()


@pytest.mark.slow
def test_sixty_seconds_of_random_bytes_leave_console_responsive_and_reads_flowing(bench, mosquitto,
                                                                                   collector_factory):
    reads = collector_factory(mosquitto, topic=TOPIC)
    assert reads.wait_count(1, timeout=30), "no read reached the broker before the noise"
    console_pid = bench.console.pid
    client = bench.client("tech-3")
    stop = threading.Event()
    sent = [0]

    def noise() -> None:
        rng = random.Random(18)
        while not stop.is_set():
            burst = rng.randbytes(1152)  # 115200 baud is about 11.5 KB/s: ten bursts a second
            bench.cable.inject(burst)
            sent[0] += len(burst)
            stop.wait(0.1)

    accepted_before = bench.agent.pipeline.accept.accepted
    received_before = len(reads.snapshot())
    answered = asked = 0
    noisy = threading.Thread(target=noise, daemon=True)
    started = time.monotonic()
    noisy.start()
    try:
        while time.monotonic() - started < NOISE_S:
            asked += 1  # a technician's command in the middle of the noise
            try:
                answered += client.link.request("whoami", timeout_s=3.0).get("technician") == "tech-3"
            except NoAnswer:
                pass
            time.sleep(0.25)  # a person's pace
    finally:
        stop.set()
        noisy.join(2)
    noise_s = time.monotonic() - started
    received_during = len(reads.snapshot()) - received_before
    accepted_during = bench.agent.pipeline.accept.accepted - accepted_before
    assert noise_s >= NOISE_S
    assert bench.console.poll() is None and bench.console.pid == console_pid, "the console died"
    # the agent kept reading and delivering while the line was noisy
    assert accepted_during > 0 and received_during > 0, (accepted_during, received_during)
    assert bench.agent.pipeline.fatal() is None
    # the console kept answering during the noise, and answers at once after it
    assert answered >= asked // 2, (answered, asked)
    status = client.link.request("status")
    assert status["ok"] and status["health"] == "ok", status
    print(f"noise: {sent[0]} random bytes in {noise_s:.1f} s; {answered} of {asked} commands answered during "
          f"it; reads accepted during it {accepted_during}, delivered {received_during}")


def test_cable_pulled_mid_snapshot_resumes_and_image_is_whole(bench):
    client = bench.client("tech-4")
    offer = client.link.request("camera snapshot")
    assert offer["ok"]
    pulled = threading.Event()

    def pull_once(done: int, total: int) -> None:
        if not pulled.is_set():
            pulled.set()
            bench.cable.pull()
            threading.Timer(1.5, bench.cable.plug).start()

    jpeg = download(client.link, offer["transfer"], offer["size"], offer["sha256"], chunk=1024, progress=pull_once)
    assert pulled.is_set()
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR) is not None
    assert bench.console.poll() is None


def test_half_typed_commands_overlong_lines_and_garbage_get_clear_answers(bench):
    drain = Drain(bench.cable.client_port)
    try:
        bench.cable.inject(b"config se")               # half a command, then the cable is pulled
        bench.cable.inject(b"\x03")                    # Ctrl-C abandons it
        bench.cable.inject(b"A" * 10000 + b"\r")       # an overlong line
        bench.cable.inject(bytes([0xC3, 0x28, 0xFF, 0xFE]) + b"\r")  # not UTF-8
        bench.cable.inject(b"\x1b[A\x1b[Bhelp\r")      # arrow keys, then a command
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and b"camera snapshot" not in drain.received:
            time.sleep(0.05)
        out = bytes(drain.received)
    finally:
        drain.close()
    assert b"line too long" in out
    assert b"camera snapshot" in out  # `help` still answered after all that
    assert bench.console.poll() is None


def _aiming_scenes() -> tuple[list[np.ndarray], str]:
    """Road scenes cropped to 16:9 at 1280x720, as a camera would deliver them.

    Read from the shared evaluation scenes (measuring only, never copied into the project);
    without them, synthetic frames, which compress better and so understate the time.
    """
    from tools.val_data import DATASETS

    files = sorted((DATASETS / "eval-br-scenes").glob("*.jpg"))[:12]
    scenes = []
    for path in files:
        image = cv2.imread(str(path))
        if image is None:
            continue
        height, width = image.shape[:2]
        crop_h = min(height, width * 9 // 16)
        top = (height - crop_h) // 2
        scenes.append(cv2.resize(image[top:top + crop_h], (1280, 720), interpolation=cv2.INTER_AREA))
    if scenes:
        return scenes, f"eval-br-scenes ({len(scenes)} scenes, centre 16:9 crop, 1280x720)"
    from tools.synth.make_clip import make_clip
    clip = make_clip(Path(tempfile.mkdtemp()) / "clip.mp4", seed=18, seconds=2)
    capture = cv2.VideoCapture(str(clip))
    frames = []
    while len(frames) < 12:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.resize(frame, (1280, 720), interpolation=cv2.INTER_CUBIC))
    capture.release()
    return frames, "synthetic clip frames upscaled to 1280x720 (../shared/datasets not present)"


def test_snapshot_time_at_115200_baud(tmp_path, mosquitto, dept):
    """The aiming snapshot over a line paced at 115200 baud (10 bits a byte), measured end to end.

    Six snapshots of whatever frame is newest (the scenes cycle at 20 fps). docs/console.md
    records the figures; the machine's load average goes with them (printed here).
    """
    scenes, what = _aiming_scenes()
    bench = Bench(tmp_path, mosquitto, dept)
    bench.write_config(scenes=scenes)
    bench.start_agent()
    bench.cable = None
    try:
        from serial_line import Cable
        bench.cable = Cable(baud=BAUD)
        bench.start_console()
        client = bench.client("tech-5")
        runs = []
        for _ in range(6):
            out = tmp_path / "aim.jpg"
            before_in, before_out = bench.cable.bytes_to_client, bench.cable.bytes_to_console
            started = time.monotonic()
            assert client.snapshot([str(out)], as_json=True) == 0
            seconds = time.monotonic() - started
            image = cv2.imread(str(out))
            assert image is not None and image.shape[1] == 640
            wire = (bench.cable.bytes_to_client - before_in) + (bench.cable.bytes_to_console - before_out)
            runs.append({"seconds": round(seconds, 2), "jpeg_bytes": out.stat().st_size, "wire_bytes": wire,
                         "wire_s_at_115200": round(wire * 10 / BAUD, 2), "size": list(image.shape[:2])})
    finally:
        bench.close()
    result = {"frames": what, "baud": BAUD, "load_average": os.getloadavg()[0], "runs": runs}
    (Path(os.environ.get("PLATEGATE_BENCH_OUT", tmp_path)) / "snapshot_115200.json").write_text(json.dumps(result))
    print("snapshot at 115200 baud:", json.dumps(result))
    times = sorted(r["seconds"] for r in runs)
    assert (times[2] + times[3]) / 2 < 5.0, result  # the target, on the median of six
    assert times[-1] < 7.0, result                   # and no run far off it on a loaded machine


def test_console_killed_mid_request_leaves_the_agent_untouched(bench):
    client = bench.client("tech-13")
    client.link.port.write(b"@k1 camera test 5\r")  # the agent is busy answering this ...
    client.link.port.flush()
    time.sleep(0.5)
    bench.console.kill()                              # ... when the console dies
    bench.console.wait()
    client.link.port.close()
    accepted = bench.agent.pipeline.accept.accepted
    deadline = time.monotonic() + 20
    while bench.agent.pipeline.accept.accepted <= accepted and time.monotonic() < deadline:
        time.sleep(0.1)
    assert bench.agent.pipeline.accept.accepted > accepted and bench.agent.pipeline.fatal() is None
    bench.start_console()
    assert bench.client("tech-13").link.request("status")["health"] == "ok"
