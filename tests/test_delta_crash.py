"""kill -9 of a host process in the middle of a delta apply: the store reopens as a fully
applied delta (the interrupted one rolled forward from the applied marker), never a mix."""

from __future__ import annotations

import shutil
import signal
import time

import numpy as np
import pytest

pytest.importorskip("tensorflow")

from recstrata.host import Host  # noqa: E402

from delta_helpers import (applied_marker, deltas_status, export_version, feeds,  # noqa: E402
                           host_config, host_process, make_model, store_rows, tables_of, wait_for)

def test_kill9_mid_apply_reopens_as_a_whole_delta(tmp_path):
    from recstrata.bundle import manifest as mf
    from recstrata.store import Store
    from recstrata.training.delta import DeltaWriter

    model = make_model()
    base = tmp_path / "base"
    v1 = export_version(model, base)
    names = {(t.name, j): (sub.store_table, int(sub.rows)) for t in mf.read(v1).tables
             for j, sub in enumerate(t.subtables)}
    assert len(names) == 2
    w = DeltaWriter(v1, model)
    s0 = tables_of(model)
    rng = np.random.default_rng(3)
    s1 = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in s0.items()}
    s2 = {k: rng.normal(size=v.shape).astype(np.float32) for k, v in s0.items()}

    with host_process(base, 1500) as child:
        w.write(s1)
        assert wait_for(lambda: str(applied_marker(v1).get("applied_sequence")) == "1"
                        and not int(applied_marker(v1).get("applying", 0)))
        w.write(s2)
        # delta 2 has begun: the first sub-table is written, the child sleeps before the second
        assert wait_for(lambda: str(applied_marker(v1).get("applying")) == "2")
        time.sleep(0.7)
        child.send_signal(signal.SIGKILL)
    m = applied_marker(v1)
    assert str(m["applied_sequence"]) == "1" and str(m["applying"]) == "2", m

    # Evidence that the kill hit mid-apply: a copy of the store holds delta 2 for the first
    # sub-table only (opened raw, under the store's crash rules).
    evidence = tmp_path / "evidence"
    shutil.copytree(v1 / "store", evidence)
    got = {}
    with Store(str(evidence), create_if_missing=False) as st:
        for key, (name, rows) in names.items():
            vals, found = st.table(name).lookup(np.arange(rows, dtype=np.int64))
            got[key] = np.array(vals)
    which = {key: ("s2" if np.array_equal(got[key], s2[key]) else
                   "s1" if np.array_equal(got[key], s1[key]) else "other") for key in names}
    assert sorted(which.values()) == ["s1", "s2"], which

    # Reopen (a host, as after a restart): delta 2 is rolled forward before serving.
    with Host(host_config(base)) as host:
        st = deltas_status(host)
        assert st["recovered"] is True and st["applied_sequence"] == 2, st
        assert host.status("m")["serving"] == [1]
        host.run("m", feeds(np.arange(8)))
    for key, (name, rows) in names.items():
        np.testing.assert_array_equal(store_rows(v1, name, rows), s2[key])
    assert str(applied_marker(v1)["applied_sequence"]) == "2"


def test_store_with_deltas_still_detects_damage(tmp_path):
    """A store opened under the crash rules (it has a delta marker) still refuses a damaged
    record and a row count that differs from bundle.json."""
    from recstrata.errors import RecstrataError
    from recstrata.processor import Model
    from recstrata.training.delta import DeltaWriter

    model = make_model()
    base = tmp_path / "base"
    v1 = export_version(model, base)
    s0 = tables_of(model)
    s1 = {k: v + 1.0 for k, v in s0.items()}
    DeltaWriter(v1, model).write(s1)
    with Host(host_config(base)) as host:
        assert deltas_status(host)["applied_sequence"] == 1
    assert (v1 / "store" / "DELTAS_APPLIED").exists()
    # flip one byte inside a record of the first table's data file
    dat = sorted((v1 / "store").glob("t*/*.dat"))[0]
    data = bytearray(dat.read_bytes())
    data[64 + 40] ^= 0x01
    dat.write_bytes(bytes(data))
    with pytest.raises(RecstrataError, match="(?i)corrupt"):
        Model(str(v1)).close()
