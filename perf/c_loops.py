"""The native caller loops the benchmarks drive: build them and write their spec files.

- perf/serving_loop.c: the bare TF C API loop (and recstrata's C entry points on a SavedModel),
  one model and one request per process; :func:`compile_c_loop`, :func:`write_c_spec`.
- perf/bundle_loop.c: recstrata serving a bundle from native threads, several request sets per
  process; :func:`compile_bundle_loop`, :func:`bundle_spec`, :class:`NativeLoop`.

Both speak the stdin protocol of :class:`harness.StdinLoop`. TensorFlow and recstrata are
imported inside the functions only.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np

import harness

HERE = Path(__file__).resolve().parent


def compile_c_loop(out_dir: Path) -> Path:
    import tensorflow as tf

    import recstrata

    exe = out_dir / "serving_loop"
    src = HERE / "serving_loop.c"
    tf_dir = tf.sysconfig.get_lib()
    lib_dir = os.path.dirname(recstrata.library_path())
    if exe.exists() and exe.stat().st_mtime > src.stat().st_mtime:
        return exe
    cmd = ["gcc", "-O2", "-std=c11", "-D_GNU_SOURCE", str(src), "-o", str(exe),
           f"-I{tf.sysconfig.get_include()}", f"-I{recstrata.include_dir()}",
           f"-L{tf_dir}", f"-L{lib_dir}", "-lrecstrata",
           "-l:libtensorflow_cc.so.2", "-l:libtensorflow_framework.so.2", "-lpthread",
           f"-Wl,-rpath,{tf_dir}", f"-Wl,-rpath,{lib_dir}"]
    subprocess.run(cmd, check=True)
    return exe


def session_config_hex(rs_config: dict) -> str:
    """The ConfigProto recstrata builds from rs_config, for the bare TF loop."""
    from tensorflow.core.protobuf import config_pb2

    cfg = config_pb2.ConfigProto(
        intra_op_parallelism_threads=rs_config.get("intra_op_parallelism_threads", 1),
        inter_op_parallelism_threads=rs_config.get("inter_op_parallelism_threads", -1),
        use_per_session_threads=rs_config.get("use_per_session_threads", False),
        allow_soft_placement=True)  # as processor/src/core/session_group.cc builds it
    return cfg.SerializeToString().hex()


def signature_graph_names(model_dir: Path) -> tuple[dict, dict]:
    """alias -> (op name, output index) of the serving_default signature."""
    from tensorflow.core.protobuf import saved_model_pb2

    sm = saved_model_pb2.SavedModel.FromString((model_dir / "saved_model.pb").read_bytes())
    sig = sm.meta_graphs[0].signature_def["serving_default"]

    def split(info):
        op, _, idx = info.name.partition(":")
        return op, int(idx or 0)

    return ({k: split(v) for k, v in sig.inputs.items()}, {k: split(v) for k, v in sig.outputs.items()})


def write_c_spec(out_dir: Path, model_dir: Path, feeds: dict, rs_config: dict, request: bytes,
                 tag: str = "") -> Path:
    """Writes serving_loop.c's spec (and input files) under out_dir/cspec_{tag}b{B}."""
    from recstrata.processor import _dtype_code

    d = out_dir / f"cspec_{tag}b{len(next(iter(feeds.values())))}"
    d.mkdir(exist_ok=True)
    ins, outs = signature_graph_names(model_dir)
    lines = [f"model_dir {model_dir}", f"config_hex {session_config_hex(rs_config)}",
             f"rs_config {json.dumps(rs_config, separators=(',', ':'))}"]
    (d / "request.bin").write_bytes(request)
    lines.append(f"request {d / 'request.bin'}")
    lines.append(f"inputs {len(feeds)}")
    for name, arr in feeds.items():
        path = d / f"{name}.bin"
        path.write_bytes(np.ascontiguousarray(arr).tobytes())
        op, idx = ins[name]
        lines.append(f"{name} {op} {idx} {_dtype_code(arr.dtype)} {arr.ndim} "
                     + " ".join(str(x) for x in arr.shape) + f" {path}")
    lines.append(f"outputs {len(outs)}")
    for name, (op, idx) in outs.items():
        lines.append(f"{name} {op} {idx}")
    spec = d / "spec.txt"
    spec.write_text("\n".join(lines) + "\n")
    return spec


def compile_bundle_loop(out: Path) -> Path:
    import recstrata

    exe = out / "bundle_loop"
    src = HERE / "bundle_loop.c"
    lib_dir = os.path.dirname(recstrata.library_path())
    import tensorflow as tf

    tf_dir = tf.sysconfig.get_lib()
    if not (exe.exists() and exe.stat().st_mtime > src.stat().st_mtime):
        subprocess.run(["gcc", "-O2", "-std=c11", "-D_GNU_SOURCE", str(src), "-o", str(exe),
                        f"-I{recstrata.include_dir()}", f"-L{lib_dir}", "-lrecstrata", "-lpthread",
                        f"-Wl,-rpath,{lib_dir}", f"-Wl,-rpath,{tf_dir}"], check=True)
    return exe


def bundle_spec(model_dir: Path, sets: list[tuple[Path, list[dict]]], path: Path,
                rs_config: dict) -> Path:
    """Spec of perf/bundle_loop.c: one request set per batch size."""
    from recstrata.processor import _dtype_code

    lines = [f"model_dir {model_dir}",
             f"rs_config {json.dumps(rs_config, separators=(',', ':'))}"]
    for req_dir, reqs in sets:
        lines += ["set", f"requests {len(reqs)}", f"inputs {len(reqs[0])}"]
        for name, arr in reqs[0].items():
            lines.append(f"{name} {_dtype_code(arr.dtype)} {arr.ndim} "
                         + " ".join(str(x) for x in arr.shape) + f" {req_dir / name}")
    path.write_text("\n".join(lines) + "\n")
    return path


class NativeLoop(harness.StdinLoop):
    """A bundle_loop process (one loaded model, several request sets)."""

    def __init__(self, exe: Path, spec: Path, lat_file: Path):
        super().__init__(exe, ["rs_run", str(spec)], lat_file)

    def run(self, set_index: int, callers: int, seconds: float) -> list[np.ndarray]:
        return self.request(set_index, callers, seconds)
