"""Disk full under the outbox (a file-size limit in a subprocess): the agent stays up,
hits are kept (by the caller, told so by OutboxFull.hits_refused) and an alarm is raised."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path


RUNNER = textwrap.dedent('''
    import json, logging, resource, signal, sys, time
    from pathlib import Path
    from agent.delivery.outbox import OutboxFull
    from helpers.soak import build_stack, destination_doc, make_read, policy_doc

    alarms = []
    class Catch(logging.Handler):
        def emit(self, record):
            if "ALARM" in record.getMessage():
                alarms.append(record.getMessage())
    logging.getLogger().addHandler(Catch())
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)      # get EFBIG instead of being killed
    state = Path(sys.argv[1])
    stack = build_stack(state)
    stack.rig.install(policy_doc(1, [destination_doc("city", "mqtts://127.0.0.1:1", "t/c", pin="0" * 64)],
                                 time.time()))
    now = time.time()
    stack.outbox.accept([make_read(i, now) for i in range(50)], now)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    sizes = [p.stat().st_size for p in state.rglob("*") if p.is_file()]
    resource.setrlimit(resource.RLIMIT_FSIZE, (max(sizes) + 1, hard))   # no file may grow
    kept_hits, errors, stored = [], 0, 0
    for i in range(50, 400):
        read = make_read(i, now, hit=(i % 10 == 0))
        try:
            stack.outbox.accept([read], now)
            stored += 1
        except OutboxFull as exc:
            errors += 1
            if exc.hits_refused and read.is_hit:
                kept_hits.append(read)              # the caller keeps hits and retries
    full_during = stack.outbox.stats()["full"]
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))           # space comes back
    for read in kept_hits:
        stack.outbox.accept([read], now)
    ids = stack.outbox.read_ids()
    full_after = stack.outbox.stats()["full"]
    integrity = stack.outbox.integrity_check()
    stack.close()
    from agent.audit.log import verify_log
    audit = verify_log(state / "audit.log")
    print(json.dumps({"audit_ok": audit.ok, "audit_problem": audit.problem,"errors": errors, "stored_while_full": stored, "alarms": len(alarms),
                      "hits_kept": len(kept_hits),
                      "hits_stored": sum(1 for r in kept_hits if r.read_id in ids),
                      "integrity": integrity,
                      "full_during": full_during, "full_after": full_after}))
''')


def test_disk_full_keeps_running_keeps_hits_and_alarms(tmp_path: Path):
    tests = Path(__file__).resolve().parent
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(tmp_path / "unit")],
                          capture_output=True, timeout=120, cwd=tests.parent,
                          env={**os.environ,
                               "PYTHONPATH": os.pathsep.join([str(tests.parent), str(tests)])})
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    result = json.loads(proc.stdout.decode().strip().splitlines()[-1])
    assert result["errors"] > 0 and result["alarms"] >= 1 and result["full_during"]
    assert result["hits_kept"] == 35 and result["hits_stored"] == 35
    assert result["integrity"] == "ok" and not result["full_after"]
    # Regression: audit writes that failed under the limit used to leave a gap in the hash
    # chain (seq advanced, records dropped), so the log no longer verified.
    assert result["audit_ok"], result["audit_problem"]
