"""Opening a model: a missing or wrong directory, a SavedModel without the requested
signature, malformed config values and warmup files get a typed error with a clear message;
unknown DeepRec keys are accepted.
"""

from __future__ import annotations

import numpy as np
import pytest

from recstrata import errors
from recstrata.processor import Model
from recstrata.wire import codec

from error_helpers import INVALID, good_feeds, raises  # noqa: E402


def test_missing_model_dir(tmp_path):
    raises(errors.NotFoundError, "does-not-exist", Model, str(tmp_path / "does-not-exist"))


def test_directory_that_is_not_a_savedmodel(tmp_path):
    (tmp_path / "empty").mkdir()
    raises(errors.NotFoundError, "empty.*not a SavedModel", Model, str(tmp_path / "empty"))
    (tmp_path / "garbage").mkdir()
    (tmp_path / "garbage" / "saved_model.pb").write_bytes(b"\x08\x01garbage\xff\xff")
    e = raises(errors.RecstrataError, "garbage", Model, str(tmp_path / "garbage"))
    assert e.code in (INVALID, 5, 7)  # TF reports a short read as OUT_OF_RANGE


def test_path_is_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    raises(errors.NotFoundError, "file.txt", Model, str(f))


def test_no_dir_anywhere():
    raises(errors.InvalidArgumentError, "savedmodel_dir", Model, None)


def test_savedmodel_dir_from_config(multi_model_dir):
    with Model(None, {"savedmodel_dir": multi_model_dir}) as m:
        assert [s.name for s in m.inputs][0].startswith("x_")


def test_missing_signature(nosig_model_dir, multi_model_dir):
    raises(errors.NotFoundError, "serving_default", Model, nosig_model_dir)
    raises(errors.NotFoundError, "nope", Model, multi_model_dir, signature_name="nope")
    with Model(nosig_model_dir, signature_name="other") as m:
        assert m.run({"x": np.array([1.0], np.float32)})["y"].tolist() == [2.0]


@pytest.mark.parametrize("config, match", [
    ("{", "config"),
    ("[]", "config"),
    ("not json", "config"),
    ('{"session_num": "two"}', "session_num"),
    ('{"session_num": 0}', "session_num"),
    ('{"session_num": -1}', "session_num"),
    ('{"session_num": 100000}', "session_num"),
    ('{"select_session_policy": "RANDOM"}', "select_session_policy"),
    ('{"cpusets": "a-b"}', "cpusets"),
    ('{"cpusets": "3-1"}', "cpusets"),
    ('{"session_num": 2, "cpusets": "0"}', "cpusets"),
    ('{"intra_op_parallelism_threads": -5}', "intra_op"),
    ('{"warmup_runs": -1}', "warmup_runs"),
    ('{"serialize_protocol": "json"}', "serialize_protocol"),
])
def test_malformed_config(multi_model_dir, config, match):
    raises(errors.InvalidArgumentError, match, Model, multi_model_dir, config)


def test_config_type_errors_in_python(multi_model_dir):
    with pytest.raises(TypeError):
        Model(multi_model_dir, 42)
    raises(errors.InvalidArgumentError, "JSON", Model, multi_model_dir, "{", session_num=2)


def test_unknown_deeprec_keys_are_accepted(multi_model_dir):
    with Model(multi_model_dir, {"feature_store_type": "memory", "omp_num_threads": 4}) as m:
        assert m.run(good_feeds())["y_i64"].tolist() == [-1, 6]


def test_missing_warmup_file(multi_model_dir, tmp_path):
    raises(errors.NotFoundError, "warmup file.*nope.bin", Model, multi_model_dir,
           warmup_file_name=str(tmp_path / "nope.bin"))


def test_garbage_warmup_file(multi_model_dir, tmp_path):
    bad = tmp_path / "warm.bin"
    bad.write_bytes(b"\xff\xfe garbage")
    raises(errors.InvalidArgumentError, "warmup file.*PredictRequest", Model, multi_model_dir,
           warmup_file_name=str(bad))


def test_valid_warmup_file(multi_model_dir, tmp_path):
    warm = tmp_path / "warm.bin"
    warm.write_bytes(codec.make_request(good_feeds(4)))
    with Model(multi_model_dir, warmup_file_name=str(warm), session_num=2) as m:
        assert m.run(good_feeds())["y_i64"].tolist() == [-1, 6]


