"""Deltas that carry a dense stage (docs/host.md "Deltas"): the host loads and warms the new dense
SavedModel beside the served one, writes the rows, then swaps the stage in whole and keeps the
store. The oracle is a full export of the same model, served by its own Model."""

from __future__ import annotations

import signal
import threading
import time

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from recstrata.host import Host  # noqa: E402
from recstrata.processor import Model  # noqa: E402

from delta_helpers import (CONFIG, applied_marker, deltas_status, export_version, feeds,  # noqa: E402
                           host_config, host_process, make_model, wait_for)
from serving_helpers import assert_outputs  # noqa: E402

IDS = np.arange(0, 1000, 7)


def _perturbed(model, seed):
    """The model with every weight (embedding rows and dense stage) moved by noise."""
    rng = np.random.default_rng(seed)
    for v in model.checkpoint_variables().values():
        if v.dtype.is_floating:
            v.assign(v + rng.normal(scale=0.1, size=v.shape).astype(v.dtype.as_numpy_dtype))
    return model


def _served_by_full_export(model, path):
    from recstrata.training.export import export_bundle

    info = export_bundle(model, path, tiers="dram")
    with Model(info["path"]) as m:
        return m.run(feeds(IDS))


def test_trained_dense_stage_is_swapped_in_and_survives_a_restart(tmp_path):
    from recstrata.training.delta import DeltaWriter
    from recstrata.training.spec import parse_config
    from recstrata.training.trainer import Trainer

    tr = Trainer(parse_config(CONFIG), log=lambda s: None)
    base = tmp_path / "base"
    v1 = export_version(tr.model, base)
    writer = DeltaWriter(v1, tr.model)
    with Host(host_config(base)) as host:
        before = host.run("m", feeds(IDS))
        tr.train(eval_each_epoch=False)  # changes embedding rows and dense weights
        info = writer.write(tr.model, dense="changed")
        assert info["dense"] and info["rows"] > 0
        assert writer.write(tr.model, dense="changed") is None  # nothing changed since
        host.reload("m")
        after = host.run("m", feeds(IDS))
        st = deltas_status(host)
        assert (st["applied_sequence"], st["dense_sequence"], st["dense_swaps"]) == (1, 1, 1), st
        assert st["last_error"] == ""
        assert host.status("m")["serving"] == [1]
        assert "rs_host_loads_total{model=\"m\"} 1" in host.metrics_text()  # no second load
    assert applied_marker(v1)["dense_sequence"] in (1, "1")
    want = _served_by_full_export(tr.model, tmp_path / "full")
    assert not np.allclose(before["prob"], want["prob"])
    assert_outputs(after, want)
    with Host(host_config(base)) as host:  # a restart serves the delta's dense stage
        assert deltas_status(host)["dense_sequence"] == 1
        assert_outputs(host.run("m", feeds(IDS)), want)


def test_requests_keep_succeeding_across_a_dense_swap(tmp_path):
    from recstrata.training.delta import DeltaWriter

    old, new = make_model(), _perturbed(make_model(), 1)
    base = tmp_path / "base"
    v1 = export_version(old, base)
    errors, done = [], threading.Event()
    with Host(host_config(base)) as host:
        def reader():
            while not done.is_set():
                try:
                    host.run("m", feeds(IDS))
                except Exception as e:  # noqa: BLE001 - any failure is the finding
                    errors.append(e)
                    return

        threads = [threading.Thread(target=reader) for _ in range(3)]
        for t in threads:
            t.start()
        try:
            DeltaWriter(v1, old).write(new, dense=True)
            host.reload("m")
            time.sleep(0.2)
        finally:
            done.set()
            for t in threads:
                t.join()
        assert not errors, errors[:3]
        assert deltas_status(host)["dense_swaps"] == 1
        got = host.run("m", feeds(IDS))
    assert_outputs(got, _served_by_full_export(new, tmp_path / "full"))


def test_a_dense_stage_of_another_signature_is_refused_before_any_row(tmp_path):
    from recstrata.training.delta import DeltaWriter

    model = make_model()
    other = _perturbed(make_model(dict(CONFIG, dense=[{"name": "d0"}, {"name": "d1"}])), 2)  # dense [B, 2]
    base = tmp_path / "base"
    v1 = export_version(model, base)
    with Host(host_config(base)) as host:
        before = host.run("m", feeds(IDS))
        info = DeltaWriter(v1, model).write(other, dense=True)
        assert info["rows"] > 0 and info["dense"]
        host.reload("m")
        st = deltas_status(host)
        assert (st["applied_sequence"], st["refused"], st["blocked_at"], st["dense_swaps"]) == (0, 1, 1, 0)
        assert "another signature" in st["last_error"], st["last_error"]
        assert_outputs(host.run("m", feeds(IDS)), before)  # the rows were not written either
    assert not (v1 / "store" / "DELTAS_APPLIED").exists()


def test_kill9_mid_dense_apply_reopens_with_the_new_dense_stage(tmp_path):
    from recstrata.training.delta import DeltaWriter

    old, new = make_model(), _perturbed(make_model(), 1)
    base = tmp_path / "base"
    v1 = export_version(old, base)
    with host_process(base, 30000) as child:
        DeltaWriter(v1, old).write(new, dense=True)
        # the dense stage is loaded and warmed, then the marker says applying before any row
        assert wait_for(lambda: str(applied_marker(v1).get("applying")) == "1", timeout=120)
        time.sleep(0.5)
        child.send_signal(signal.SIGKILL)
    m = applied_marker(v1)
    assert str(m.get("applied_sequence", 0)) == "0" and str(m["applying"]) == "1", m
    with Host(host_config(base)) as host:
        st = deltas_status(host)
        assert st["recovered"] is True and (st["applied_sequence"], st["dense_sequence"]) == (1, 1), st
        got = host.run("m", feeds(IDS))
    assert_outputs(got, _served_by_full_export(new, tmp_path / "full"))
