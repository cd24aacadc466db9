"""Dynamic tables on 2 workers (MultiWorkerMirroredStrategy over localhost, 1 replica each):
rows are sharded by owner(id) = splitmix64(id ^ seed) mod 2, each worker's store holds only
the rows it owns, and the run trains the same model as one worker on the same global batch
(the union of the shards equals the one-worker store, rows within 2e-4, histories within
rtol 1e-3). Checkpoints hold one shard snapshot per worker (ckpt-N.dyn.w<k>); resume and
export (the union of the shards) work from them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from recstrata.training.dynamic import owner  # noqa: E402

from dynamic_helpers import QUIET, config, examples, keras_probs  # noqa: E402
from net_helpers import free_ports  # noqa: E402

IDS = 20000
DYN = {"admission": {"threshold": 2}, "eviction": {"ttl_steps": 6, "every_steps": 2}}

RUNNER = textwrap.dedent("""
    import json, sys, os
    import numpy as np
    import tensorflow as tf
    cfg_path, out, stop = sys.argv[1], sys.argv[2], int(sys.argv[3])
    from recstrata.training import spec, trainer
    cfg = spec.load_config(cfg_path)
    tr = trainer.Trainer(cfg, log=lambda s: None)
    resumed = tr.restore()
    hist = tr.train(stop_after_steps=stop or None)
    st = tr.dynamic_store.stats()
    res = {"workers": tr.cluster.num_workers, "worker": tr.cluster.worker,
           "resumed": resumed,
           "history": [[h.train_loss, h.eval_auc, h.eval_logloss] for h in hist],
           "stats": st["tables"]["user"],
           "rows": tr.dynamic_store.lookup("user", np.arange(%d)).tolist()}
    tr.close()
    json.dump(res, open(out, "w"))
""" % IDS)


def _start(tmp_path, cfg_dict, tag, env=None, stop=0):
    script = tmp_path / "runner.py"
    script.write_text(RUNNER)
    cp = tmp_path / f"cfg_{tag}.json"
    cp.write_text(json.dumps(cfg_dict))
    out = tmp_path / f"out_{tag}.json"
    return subprocess.Popen([sys.executable, str(script), str(cp), str(out), str(stop)],
                            env={**os.environ, **QUIET, **(env or {})}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True), out


def _wait(proc, out):
    log, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, log[-3000:]
    return json.loads(out.read_text())


def _workers(tmp_path, cfg_dict, tag, stop=0):
    ports = free_ports(2)
    workers = [f"127.0.0.1:{p}" for p in ports]
    procs = []
    for i in range(2):
        tfc = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": i}})
        procs.append(_start(tmp_path, cfg_dict, f"{tag}_w{i}", env={"TF_CONFIG": tfc}, stop=stop))
    return [_wait(p, o) for p, o in procs]


def _cfg(**train):
    train.setdefault("epochs", 2)
    return config(DYN, **train)


@pytest.fixture(scope="module")
def one_worker(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("one")
    return _wait(*_start(tmp, _cfg(devices="cpu"), "one"))


@pytest.fixture(scope="module")
def two_workers(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two")
    ck = tmp / "ck"
    res = _workers(tmp, _cfg(checkpoint_dir=str(ck), checkpoint_every_steps=10), "two")
    return res, ck


def _union(shards):
    rows = [np.array(r["rows"]) for r in shards]
    return rows, sum(rows)


def _assert_same(one, shards):
    rows, union = _union(shards)
    r1 = np.array(one["rows"])
    # the same ids have rows in the union of the shards as in the one-worker store
    np.testing.assert_array_equal(r1.any(axis=1), union.any(axis=1))
    np.testing.assert_allclose(r1, union, atol=2e-4)
    for k in ("rows", "admitted", "evicted_age", "evicted_cap", "updates"):
        assert one["stats"][k] == sum(s["stats"][k] for s in shards), k
    for s in shards:
        assert s["stats"]["step"] == one["stats"]["step"]   # every shard applies every step
        for a, b in zip(one["history"], s["history"]):
            np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4)


def test_two_workers_match_one_worker(one_worker, two_workers):
    shards, _ = two_workers
    assert [s["workers"] for s in shards] == [2, 2] and [s["worker"] for s in shards] == [0, 1]
    assert one_worker["stats"]["step"] == 48
    assert one_worker["stats"]["evicted_age"] > 0 and one_worker["stats"]["admitted"] > 0
    assert len(one_worker["history"]) == 2
    _assert_same(one_worker, shards)


def test_each_shard_holds_only_the_ids_it_owns(two_workers):
    shards, _ = two_workers
    own = owner(np.arange(IDS), 2)
    for k, s in enumerate(shards):
        present = np.array(s["rows"]).any(axis=1)
        assert present.sum() == s["stats"]["rows"] > 0
        assert not present[own != k].any(), f"worker {k} holds ids it does not own"
    # the hash spreads the rows over both workers
    n = [s["stats"]["rows"] for s in shards]
    assert min(n) > 0.3 * sum(n)


def test_checkpoints_hold_every_shard(two_workers):
    import tensorflow as tf

    _, ck = two_workers
    latest = tf.train.latest_checkpoint(str(ck))
    assert latest is not None and latest.endswith("ckpt-6")     # steps 10, 20 and the end of each epoch
    for k in range(2):
        assert os.path.isdir(f"{latest}.dyn.w{k}")
    assert not os.path.exists(f"{latest}.dyn.w2") and not os.path.exists(f"{latest}.dyn")
    names = os.listdir(ck)
    assert not [n for n in names if n.startswith(".worker")]
    # old snapshots go with their checkpoints (max_to_keep 3)
    kept = {n.split(".")[0] for n in names if ".dyn.w" in n}
    assert len(kept) == 3 and os.path.basename(latest) in kept


def test_resume_on_two_workers_equals_uninterrupted(tmp_path, one_worker):
    ck = tmp_path / "ck"
    cfg = _cfg(checkpoint_dir=str(ck), checkpoint_every_steps=10)
    first = _workers(tmp_path, cfg, "a", stop=31)     # "crash" in epoch 2 after ckpt at step 10
    assert all(not r["resumed"] for r in first)
    second = _workers(tmp_path, cfg, "b")
    assert all(r["resumed"] for r in second)
    _assert_same({**one_worker, "history": one_worker["history"][1:]}, second)


def test_one_worker_refuses_a_two_worker_checkpoint(two_workers, tmp_path):
    _, ck = two_workers
    p, out = _start(tmp_path, _cfg(devices="cpu", checkpoint_dir=str(ck),
                                   checkpoint_every_steps=10, epochs=3), "refuse")
    log, _ = p.communicate(timeout=240)
    assert p.returncode != 0
    assert "saved as 2 worker shards" in log and "same number of workers" in log, log[-2000:]


def test_load_trained_and_export_use_the_union(two_workers, one_worker, tmp_path):
    from recstrata.processor import Model
    from recstrata.training.export import bundle_feeds, export_bundle
    from recstrata.training.trainer import load_trained

    _, ck = two_workers
    model, cfg = load_trained(str(ck))
    try:
        rows = model.dynamic_store.lookup("user", np.arange(IDS))
        r1 = np.array(one_worker["rows"])
        np.testing.assert_array_equal(r1.any(axis=1), rows.any(axis=1))
        np.testing.assert_allclose(rows, r1, atol=2e-4)
        info = export_bundle(model, tmp_path / "b")
        m = info["manifest"]
        t = {x["name"]: x for x in m["tables"]}["user"]
        assert int(t["subtables"][0]["rows"]) == one_worker["stats"]["rows"]
        ex = examples(cfg, 300, 5)
        with Model(str(tmp_path / "b")) as served:
            out = served.run(bundle_feeds(m, ex))
        assert float(np.abs(out["prob"] - keras_probs(model, cfg, ex)).max()) <= 1e-5
    finally:
        model.close()


def test_predict_on_a_shard_is_refused():
    from recstrata.training import dynamic
    from recstrata.training.models import RecModel
    from recstrata.training.spec import parse_config

    cfg = parse_config(_cfg())
    store = dynamic.open_for_config(cfg, 1, None, dynamic.Sharding(2, 1, 1))
    model = RecModel(cfg, dynamic_store=store)
    try:
        with pytest.raises(dynamic.DynamicTableError, match="shard 1 of 2"):
            model.predict_batch(examples(cfg, 4, 0))
    finally:
        store.close()
