"""Does the agent run under systemd's MemoryDenyWriteExecute=yes? Measure it without systemd.

Why: MemoryDenyWriteExecute= is a seccomp filter; a library that needs writable executable
memory (a JIT) or an executable stack (dlopen then mprotects the stack PROT_EXEC) fails
under it, and on a unit that means an agent that never starts. This installs the same rules
systemd installs (src/shared/seccomp-util.c, seccomp_memory_deny_write_execute):

    mmap/mmap2 with PROT_WRITE|PROT_EXEC, mprotect/pkey_mprotect adding PROT_EXEC,
    shmat with SHM_EXEC  ->  EPERM

then proves the filter bites (a W+X mmap is refused) and loads what the agent loads: numpy,
OpenCV, onnxruntime with the shipped models (one recognition), paho-mqtt, cryptography.
Exit 0 and one JSON line when everything ran under the filter; non-zero otherwise.
With a command after `--`, it runs that command under the filter instead (the filter is
inherited across exec): the whole agent, e.g. `-- plategate run --config unit.toml`.
`--refuse` also refuses (EPERM) the syscalls the agent's libraries make that the unit's
SystemCallFilter= refuses (docs/install.md lists them), to show the agent works without them.

    python tools/check_sandbox.py [--models DIR] [--refuse] [-- COMMAND ...]
"""
from __future__ import annotations

import argparse
import ctypes
import json
import mmap
import os
import platform
import struct
import sys
from pathlib import Path

# struct seccomp_data: int nr; u32 arch; u64 ip; u64 args[6] (little-endian: low word first)
NR, ARCH, ARG2_LOW = 0, 4, 16 + 8 * 2
AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
SYSCALLS = {  # mmap, mprotect, pkey_mprotect, shmat
    "x86_64": (9, 10, 329, 30),
    "aarch64": (222, 226, 288, 196),
}
# Made by the agent's libraries, refused by the unit (@privileged, @resources): fchown (SQLite, as
# root only), mbind (OpenBLAS's NUMA hint), sched_setaffinity (onnxruntime pinning its threads).
REFUSED_BY_UNIT = {
    "x86_64": {"fchown": 93, "mbind": 237, "sched_setaffinity": 203},
    "aarch64": {"fchown": 55, "mbind": 235, "sched_setaffinity": 122},
}
PROT_WRITE, PROT_EXEC, SHM_EXEC = 0x2, 0x4, 0o100000
RET_ALLOW, RET_EPERM = 0x7FFF0000, 0x00050000 | 1
LD_ABS, JEQ, AND, RET = 0x20, 0x15, 0x54, 0x06
PR_SET_NO_NEW_PRIVS, PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 38, 22, 2


def _filter(machine: str, refuse: bool = False) -> list[tuple[int, int, int, int]]:
    mmap_nr, mprotect_nr, pkey_mprotect_nr, shmat_nr = SYSCALLS[machine]

    def deny_if(mask: int, value: int) -> list[tuple[int, int, int, int]]:
        return [(LD_ABS, 0, 0, ARG2_LOW), (AND, 0, 0, mask), (JEQ, 0, 1, value),
                (RET, 0, 0, RET_EPERM), (RET, 0, 0, RET_ALLOW)]

    mmap_rule = deny_if(PROT_WRITE | PROT_EXEC, PROT_WRITE | PROT_EXEC)
    mprotect_rule = deny_if(PROT_EXEC, PROT_EXEC)
    shmat_rule = deny_if(SHM_EXEC, SHM_EXEC)
    head = [(LD_ABS, 0, 0, ARCH), (JEQ, 1, 0, AUDIT_ARCH[machine]), (RET, 0, 0, RET_ALLOW),
            (LD_ABS, 0, 0, NR)]
    for nr in REFUSED_BY_UNIT[machine].values() if refuse else ():
        head += [(JEQ, 0, 1, nr), (RET, 0, 0, RET_EPERM)]
    # four syscall tests, then "allow", then the three rule blocks
    jumps_len = 4
    to_mmap = jumps_len + 1
    to_mprotect = to_mmap + len(mmap_rule)
    to_shmat = to_mprotect + len(mprotect_rule)
    tests = []
    for i, (nr, target) in enumerate([(mmap_nr, to_mmap), (mprotect_nr, to_mprotect),
                                      (pkey_mprotect_nr, to_mprotect), (shmat_nr, to_shmat)]):
        tests.append((JEQ, target - i - 1, 0, nr))
    return head + tests + [(RET, 0, 0, RET_ALLOW)] + mmap_rule + mprotect_rule + shmat_rule


def install_filter(refuse: bool = False) -> None:
    machine = platform.machine()
    if machine not in SYSCALLS:
        raise SystemExit(f"check_sandbox: no syscall table for {machine}")
    program = _filter(machine, refuse)
    raw = b"".join(struct.pack("=HBBI", *ins) for ins in program)
    buf = ctypes.create_string_buffer(raw, len(raw))

    class SockFprog(ctypes.Structure):
        _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]

    prog = SockFprog(len(program), ctypes.cast(buf, ctypes.c_void_p))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS)")
    if libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP)")


def filter_bites() -> bool:
    """A writable+executable anonymous mapping must now be refused."""
    try:
        mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC).close()
    except PermissionError:
        return True
    return False


def run_agent_libraries(models: Path | None) -> dict:
    import cv2
    import numpy as np
    import onnxruntime
    import paho.mqtt.client  # noqa: F401  (imported as the agent imports it)
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from agent.resources import bundled_models_dir
    from agent.vision.recognizer import Recognizer

    Ed25519PrivateKey.generate().sign(b"mdwe")
    recognizer = Recognizer.from_models(models or bundled_models_dir(), threads=1)
    frame = np.full((480, 640, 3), 90, np.uint8)
    cv2.putText(frame, "ABC 1234", (200, 250), cv2.FONT_HERSHEY_SIMPLEX, 1.2, (0, 0, 0), 3)
    recognizer.recognize(frame)
    return {"onnxruntime": onnxruntime.__version__, "opencv": cv2.__version__, "numpy": np.__version__}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=None, help="models folder (default: the bundled one)")
    parser.add_argument("--refuse", action="store_true",
                        help="also refuse the syscalls the unit refuses that the libraries make")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ...: run it under the filter")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    install_filter(args.refuse)
    if not filter_bites():
        print(json.dumps({"ok": False, "error": "the filter did not refuse a W+X mapping"}))
        return 1
    if command:
        os.execvp(command[0], command)
    versions = run_agent_libraries(args.models)
    print(json.dumps({"ok": True, "machine": platform.machine(), **versions}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
