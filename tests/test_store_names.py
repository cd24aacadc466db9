"""Table names with any byte but NUL survive the JSON texts of the store.

The store's names list and stats are JSON built by the library's one escaper
(processor/src/base/json_text.h); a name with quotes, backslashes, control
characters or non-ASCII bytes must decode to exactly the name it was created
with, in memory and after a reopen from disk.
"""
from __future__ import annotations

import numpy as np
import pytest

from recstrata.store import Store

NAMES = ['plain', 'with "quotes"', 'back\\slash', 'tab\tnew\nline\rcr', 'ctl\x01\x1f\x7f',
         'ümlaut-✓', '{"json": 1}']


@pytest.mark.parametrize("path", [None, "disk"])
def test_names_round_trip(tmp_path, path):
    where = None if path is None else str(tmp_path / "store")
    opts = {} if path is None else {"tiers": "dram+ssd"}
    with Store(where, **opts) as store:
        for i, name in enumerate(NAMES):
            t = store.create_table(name, 2)
            t.upsert(np.array([i], np.int64), np.full((1, 2), i, np.float32))
        assert sorted(store.table_names()) == sorted(NAMES)
        assert sorted(store.stats()["tables"]) == sorted(NAMES)
    if where is None:
        return
    with Store(where) as store:
        assert sorted(store.table_names()) == sorted(NAMES)
        for i, name in enumerate(NAMES):
            rows, found = store.table(name).lookup(np.array([i], np.int64))
            assert found.all() and (rows == i).all()
