"""Dynamic tables on 2 logical CPU devices (MirroredStrategy): both replicas share the
worker's one store; each step's row gradients of both replicas are applied once, summed per
id, so 2 devices train the same model as 1 device (up to float summation order)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from dynamic_helpers import QUIET, config  # noqa: E402

RUNNER = textwrap.dedent("""
    import json, sys, os
    import numpy as np
    import tensorflow as tf
    n, cfg_path, out = int(sys.argv[1]), sys.argv[2], sys.argv[3]
    if n > 1:
        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * n)
    from recstrata.training import spec, trainer
    cfg = spec.load_config(cfg_path)
    tr = trainer.Trainer(cfg, log=lambda s: None)
    hist = tr.train()
    st = tr.dynamic_store.stats()
    res = {"replicas": tr.cluster.num_replicas,
           "history": [[h.train_loss, h.eval_auc, h.eval_logloss] for h in hist],
           "stats": st["tables"]["user"],
           "rows": tr.dynamic_store.lookup("user", np.arange(20000)).tolist(),
           "store_dirs": [tr.dynamic_store.directory]}
    tr.close()
    json.dump(res, open(out, "w"))
""")


def _run(tmp_path, n, tag, env=None):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    cp = tmp_path / f"cfg_{tag}.json"
    cp.write_text(json.dumps(config({"eviction": {"max_rows": 800}},
                                    devices="mirrored" if n > 1 else "cpu", epochs=2)))
    out = tmp_path / f"out_{tag}.json"
    p = subprocess.run([sys.executable, str(script), str(n), str(cp), str(out)],
                       env={**__import__("os").environ, **QUIET, **(env or {})}, capture_output=True,
                       text=True, timeout=300)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    return json.loads(out.read_text())


def test_two_logical_devices_match_one_device(tmp_path):
    one = _run(tmp_path, 1, "one")
    two = _run(tmp_path, 2, "two")
    assert one["replicas"] == 1 and two["replicas"] == 2
    # one apply per step, not one per replica
    assert one["stats"]["step"] == two["stats"]["step"] == 48
    for k in ("rows", "admitted", "evicted_cap"):
        assert one["stats"][k] == two["stats"][k], k
    assert one["stats"]["evicted_cap"] > 0
    r1, r2 = np.array(one["rows"]), np.array(two["rows"])
    np.testing.assert_array_equal(r1.any(axis=1), r2.any(axis=1))
    np.testing.assert_allclose(r1, r2, atol=2e-4)
    for a, b in zip(one["history"], two["history"]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_gpu_placement_path_on_logical_cpus(tmp_path):
    # With GPUs, every replica's dynamic-table ops run on the host CPU (device 0) and the rows
    # cross devices as tensors. Exercised here on 2 logical CPUs (never run on a real GPU).
    one = _run(tmp_path, 1, "one")
    two = _run(tmp_path, 2, "host", env={"RECSTRATA_DYNAMIC_HOST_DEVICE": "/device:CPU:0"})
    assert two["replicas"] == 2 and two["stats"]["step"] == 48
    assert one["stats"]["rows"] == two["stats"]["rows"]
    np.testing.assert_allclose(np.array(one["rows"]), np.array(two["rows"]), atol=2e-4)
    for a, b in zip(one["history"], two["history"]):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)
