"""A pytest plugin for scripts/s3-tests.sh: writes each ceph/s3-tests test's outcome,
markers and (when it failed) last error line as JSON lines to $S3TESTS_REPORT."""
import json
import os

import pytest

_out = open(os.environ["S3TESTS_REPORT"], "w") if os.environ.get("S3TESTS_REPORT") else None
_done = set()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    # The call's outcome, or the setup's when the test never ran.
    if _out is None or item.nodeid in _done:
        return
    if rep.when == "call" or (rep.when == "setup" and rep.outcome != "passed"):
        _done.add(item.nodeid)
        why = ""
        if rep.outcome == "failed" and rep.longrepr is not None:
            lines = [l for l in str(rep.longrepr).strip().splitlines() if l.strip()]
            why = next((l for l in reversed(lines) if l.startswith("E ")), lines[-1] if lines else "")[:300]
        markers = sorted({m.name for m in item.iter_markers()})
        _out.write(json.dumps({"test": item.name, "outcome": rep.outcome, "markers": markers, "why": why}) + "\n")
        _out.flush()
