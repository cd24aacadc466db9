"""Deltas (docs/bundle-format.md "Deltas", docs/host.md "Deltas"): the training package writes the
embedding rows that changed, the native host applies them in place into the served version's
store. Trains for real in the first test; the refusal tests edit tables by hand."""

from __future__ import annotations

import os
import shutil
import threading

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from recstrata.host import Host  # noqa: E402

from delta_helpers import (deltas_status, edit_tables, export_version, feeds,  # noqa: E402
                           host_config, make_model, store_rows, tables_of)


@pytest.fixture
def served(tmp_path):
    """(model, base path, version-1 dir) of an untrained model exported as version 1."""
    model = make_model()
    base = tmp_path / "base"
    v1 = export_version(model, base)
    return model, base, v1


def _metric(text: str, name: str, **labels) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return s.value
    raise KeyError(name)


def test_train_serve_delta_changes_predictions_without_reload(tmp_path):
    from recstrata.training.delta import DeltaWriter
    from recstrata.training.spec import parse_config
    from recstrata.training.trainer import Trainer

    from delta_helpers import CONFIG

    tr = Trainer(parse_config(CONFIG), log=lambda s: None)
    base = tmp_path / "base"
    v1 = export_version(tr.model, base)
    writer = DeltaWriter(v1, tr.model)
    ids = np.arange(64)
    with Host(host_config(base)) as host:
        before = host.run("m", feeds(ids))["prob"]
        tr.train(eval_each_epoch=False)           # one small epoch changes embedding rows
        info = writer.write(tr.model, training_step=int(tr.step_in_epoch.numpy()))
        assert info is not None and info["sequence"] == 1 and info["rows"] > 0
        host.reload("m")                           # a discovery pass: applies, does not reload
        after = host.run("m", feeds(ids))["prob"]
        st = deltas_status(host)
        assert st["applied_sequence"] == 1 and st["rows_applied"] == info["rows"]
        assert st["last_error"] == "" and st["refused"] == 0
        assert host.status("m")["serving"] == [1]
        text = host.metrics_text()
        assert _metric(text, "rs_host_loads_total", model="m") == 1   # no second load
        assert _metric(text, "rs_host_delta_applied_sequence", model="m", version="1") == 1
        assert _metric(text, "rs_host_delta_rows_applied_total", model="m", version="1") == info["rows"]
    assert not np.allclose(before, after)
    # the store now holds exactly the trained rows (the host closed it cleanly)
    trained = tables_of(tr.model)
    for t in __import__("recstrata.bundle.manifest", fromlist=["read"]).read(v1).tables:
        for j, sub in enumerate(t.subtables):
            np.testing.assert_array_equal(store_rows(v1, sub.store_table, sub.rows), trained[(t.name, j)])


def test_refusals_keep_serving_last_good_state(served, tmp_path):
    from recstrata.training.delta import DeltaWriter

    model, base, v1 = served
    w = DeltaWriter(v1, model)
    s0 = tables_of(model)
    s1 = edit_tables(s0, 1)
    ids = np.arange(200)
    with Host(host_config(base)) as host:
        w.write(s1)
        host.reload("m")
        good = host.run("m", feeds(ids))["prob"]
        assert deltas_status(host)["applied_sequence"] == 1

        # a gap: delta 3 without delta 2
        w.write(edit_tables(s1, 2))                      # seq 2
        os.rename(v1 / "deltas" / "2", tmp_path / "held_back")
        w.last_seq = 2
        w.write(edit_tables(s1, 3))                      # seq 3
        host.reload("m")
        st = deltas_status(host)
        assert st["applied_sequence"] == 1 and st["blocked_at"] == 3 and st["refused"] == 1
        assert "gap" in st["last_error"]
        np.testing.assert_array_equal(host.run("m", feeds(ids))["prob"], good)

        # the missing delta arrives but is damaged (one byte flipped in a row file)
        os.rename(tmp_path / "held_back", v1 / "deltas" / "2")
        rowfile = next((v1 / "deltas" / "2").glob("*.rows"))
        data = bytearray(rowfile.read_bytes())
        data[len(data) // 2] ^= 0x40
        rowfile.write_bytes(bytes(data))
        host.reload("m")
        st = deltas_status(host)
        assert st["applied_sequence"] == 1 and st["blocked_at"] == 2
        assert "checksum" in st["last_error"] and st["refused"] == 2
        np.testing.assert_array_equal(host.run("m", feeds(ids))["prob"], good)
        text = host.metrics_text()
        assert _metric(text, "rs_host_deltas_refused_total", model="m", version="1") == 2
        assert _metric(text, "rs_host_deltas_pending", model="m", version="1") == 2

        # a repeated pass does not count the same refusal again
        host.reload("m")
        assert deltas_status(host)["refused"] == 2


def test_wrong_base_and_dense_and_malformed_are_refused(served):
    from google.protobuf import json_format

    from recstrata.bundle import manifest as mf
    from recstrata.training.delta import DeltaWriter

    model, base, v1 = served
    ids = np.arange(100)

    def dense_delta():
        DeltaWriter(v1, model).write(edit_tables(tables_of(model), 6))
        p = v1 / "deltas" / "1" / "delta.json"
        d = json_format.Parse(p.read_text(), mf.Delta())
        d.dense.dir = "dense"
        p.write_text(json_format.MessageToJson(d))

    cases = [
        (lambda: DeltaWriter(v1, model, base_version=7).write(edit_tables(tables_of(model), 4)),
         "is for base version 7"),
        (lambda: _with_crc(DeltaWriter(v1, model)).write(edit_tables(tables_of(model), 5)),
         "another export of this version"),
        (dense_delta, "lists no dense/saved_model.pb"),
        (lambda: _malformed(v1), "delta manifest"),
    ]
    with Host(host_config(base)) as host:
        before = host.run("m", feeds(ids))["prob"]
        for i, (make, want) in enumerate(cases):
            make()
            host.reload("m")
            st = deltas_status(host)
            assert st["applied_sequence"] == 0 and st["blocked_at"] == 1, st
            assert want in st["last_error"], st["last_error"]
            assert st["refused"] == i + 1
            np.testing.assert_array_equal(host.run("m", feeds(ids))["prob"], before)
            shutil.rmtree(v1 / "deltas" / "1")


def _with_crc(w):
    w.base_crc = "00000000"
    return w


def _malformed(v1):
    d = v1 / "deltas" / "1"
    d.mkdir(parents=True)
    (d / "delta.json").write_text('{"format": "recstrata.delta", "format_version": 1, "sequence": "1", "bogus": 1}')


def test_new_full_version_supersedes_deltas(served, tmp_path):
    from recstrata.training.delta import DeltaWriter

    model, base, v1 = served
    w = DeltaWriter(v1, model)
    s1 = edit_tables(tables_of(model), 7)
    ids = np.arange(300)
    with Host(host_config(base)) as host:
        w.write(s1)
        host.reload("m")
        with_delta = host.run("m", feeds(ids))["prob"]
        # version 2: a full export of the original model (no deltas of its own)
        export_version(model, base, 2)
        host.reload("m")
        assert host.status("m")["serving"] == [2]
        v2 = host.run("m", feeds(ids))["prob"]
        assert deltas_status(host, 2)["applied_sequence"] == 0
        # a delta of version 1 no longer matters; version 2 serves its own tables
        DeltaWriter(v1, s1).write(edit_tables(s1, 8))
        host.reload("m")
        np.testing.assert_array_equal(host.run("m", feeds(ids))["prob"], v2)
        assert not np.allclose(v2, with_delta)


def _answers_of_states(v1, states, ids, tmp):
    """Per state: the prob of each single-id request, served by a direct Model on a copy of the
    bundle whose store holds that state (written with recstrata.store, closed cleanly)."""
    from recstrata.bundle import manifest as mf
    from recstrata.processor import Model
    from recstrata.store import Store

    copy = tmp / "copy"
    shutil.copytree(v1, copy, ignore=shutil.ignore_patterns("deltas", "DELTAS_APPLIED"))
    names = {(t.name, j): sub.store_table for t in mf.read(copy).tables
             for j, sub in enumerate(t.subtables)}
    out = []
    for st in states:
        with Store(str(copy / "store"), create_if_missing=False) as store:
            for key, arr in st.items():
                store.table(names[key]).upsert(np.arange(arr.shape[0], dtype=np.int64), arr)
        with Model(str(copy)) as m:
            out.append({int(i): float(m.run(feeds([i]))["prob"][0]) for i in ids})
    return out


def test_concurrent_readers_see_each_row_old_or_new(served, tmp_path):
    """Readers running while deltas apply get, per row, the old or the new value, never a mix.
    Only the uid table changes (every row, in each delta), so a single-id request reads exactly
    one changing row and its answer must be one of the states' answers for that id."""
    from recstrata.training.delta import DeltaWriter

    model, base, v1 = served
    w = DeltaWriter(v1, model)
    s = tables_of(model)
    uid = [k for k in s if k[0] == "uid"]
    assert len(uid) == 1
    rng = np.random.default_rng(11)
    states = [s]
    for _ in range(4):
        nxt = {k: v.copy() for k, v in s.items()}
        nxt[uid[0]] = rng.normal(size=s[uid[0]].shape).astype(np.float32)
        states.append(nxt)
    ids = np.arange(12)
    seen = []
    errors = []
    with Host(host_config(base)) as host:
        stop = threading.Event()

        def reader():
            while not stop.is_set():
                try:
                    for i in ids:
                        seen.append((int(i), float(host.run("m", feeds([i]))["prob"][0])))
                except Exception as exc:  # reported below
                    errors.append(exc)
                    return

        threads = [threading.Thread(target=reader) for _ in range(2)]
        for t in threads:
            t.start()
        for k in range(1, len(states)):
            w.write(states[k])
            host.reload("m")
        stop.set()
        for t in threads:
            t.join()
        assert not errors
        assert deltas_status(host)["applied_sequence"] == len(states) - 1
        final = {int(i): float(host.run("m", feeds([i]))["prob"][0]) for i in ids}
    answers = _answers_of_states(v1, states, ids, tmp_path)
    assert answers[-1] == pytest.approx(final, abs=1e-6)   # the copy reproduces the host
    assert len({round(a[0], 6) for a in answers}) == len(states)  # states are distinguishable
    bad = [(i, p) for i, p in seen if not any(abs(p - a[i]) <= 1e-6 for a in answers)]
    assert len(seen) > 50 and not bad, bad[:5]
