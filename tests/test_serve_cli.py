"""`recstrata serve` over the native host: argument errors, batching and policies from the flags.

The end-to-end hot reload through the CLI is in tests/test_http_server.py.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request

import pytest

from recstrata.cli import main

from serving_helpers import const_models, put_version  # noqa: F401


@pytest.mark.parametrize("argv, fragment", [
    (["--model", "a=/x", "--model", "a=/y"], "given twice"),
    (["--model", "a"], "NAME=BASE_DIR"),
    (["--model", "a=/x", "--poll-seconds", "-1"], "--poll-seconds"),
    (["--model", "a=/x", "--config", "[1]"], "JSON object"),
    (["--model", "a=/x", "--config", "{bad"], "not valid JSON"),
    (["--model", "a=/x", "--policy", "newest"], "bad version policy"),
])
def test_bad_arguments_are_one_line_errors(capsys, argv, fragment):
    assert main(["serve", "--port", "0", *argv]) == 1
    err = capsys.readouterr().err
    assert err.startswith("recstrata serve: error:") and fragment in err, err


def _get(url):
    with urllib.request.urlopen(url, timeout=30) as resp:
        return resp.read()


def test_flags_reach_the_native_host(tmp_path, const_models):
    for v in (1, 2):
        put_version(tmp_path, v, const_models[v])
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    proc = subprocess.Popen([sys.executable, "-m", "recstrata.cli", "serve", "--model", f"ctr={tmp_path}",
                             "--port", "0", "--poll-seconds", "0", "--policy", "all", "--load-nice", "3",
                             "--max-batch-size", "8", "--max-queue-delay-us", "200", "--log-level", "WARNING"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        got: list[str] = []
        reader = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
        reader.start()
        reader.join(120)
        m = re.match(r"serving on (http://127\.0\.0\.1:\d+)", got[0] if got else "")
        assert m, proc.stderr.read() if proc.poll() is not None else got
        url = m.group(1)
        st = json.loads(_get(url + "/v1/models/ctr"))
        assert st["policy"] == "all" and st["serving"] == [1, 2]
        assert all(v["batching"].startswith("on") and v["loader"] == "nice +3" for v in st["versions"])
        text = _get(url + "/metrics").decode()
        assert 'rs_host_version_ready{model="ctr",version="1"} 1' in text
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert rc == 0
