"""Embedding compression study: plain vs hashed plain vs multihash vs binary_code.

On the synthetic data (Zipf ids, hidden FM teacher; recstrata.training.synthetic), the same
DeepFM model is trained with the large tables stored as

  * ``plain``      the reference: one row per id (collision-free), 1x;
  * ``hash``       the hashing trick: a plain table with fewer rows (ids collide), the
                   baseline every compression scheme must beat;
  * ``qr``         multihash quotient-remainder (2 sub-tables, combiner add);
  * ``qr_concat``  / ``qr_mul``   the same with concat / multiply (full run only);
  * ``kway``       multihash with 2 hashed sub-tables (add);
  * ``binary_code`` binary-code hash embedding (succession blocks; ``bc_skip`` in the full run)
  * ``freq``       frequency-aware: 3/4 of the bytes buy exact rows for the ids a count-min
                   sketch finds hot during training, ``qr`` shares the rest among the tail

at several compression ratios (plain embedding bytes / scheme embedding bytes, all tables
counted; the small tables stay plain), on two synthetic teachers (``--data``): ``independent``
id parameters (close to the worst case for compression) and ``structured`` ones
(popularity-correlated and clustered, as in real logs). Reported per run: eval AUC, relative AUC loss vs plain
((AUC_plain - AUC) / AUC_plain), log loss, bytes, wall seconds. Plain is trained with several
seeds to show the run-to-run noise. Writes perf/out/compression.{md,json} and perf/results/compression.png; the last line is
``RESULT {json}``.

    python perf/compression_study.py            # full
    python perf/compression_study.py --quick    # reduced, a few minutes on 2 shared cores
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from recstrata.training import keys as K  # noqa: E402
from recstrata.training.spec import load_config  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import plot_path, print_result, save_plot  # noqa: E402

DIM = 16
# (name, vocab, max_values); vocab >= COMPRESS_MIN are compressed
FEATURES = [("f0", 200_000, 1), ("f1", 100_000, 1), ("f2", 50_000, 1), ("f3", 20_000, 1),
            ("hist", 20_000, 4), ("f4", 1_000, 1), ("f5", 100, 1), ("f6", 20, 1)]
COMPRESS_MIN = 10_000
ALL_KINDS = ["hash", "qr", "qr_concat", "qr_mul", "kway", "binary_code", "bc_skip", "freq"]
DATASETS = ("independent", "structured")   # synthetic.structure (recstrata.training.synthetic)
# freq: share of a table's byte budget spent on exact hot rows, the sketch count at which an id
# becomes hot, the tail's scheme (--freq-share, --freq-admit, --freq-tail)
FREQ = {"share": 0.75, "admit": 2, "tail": "hash"}


def base_config(num_train: int, num_eval: int, seed: int, zipf: float,
                structure: str = "independent", data_seed: int = 0) -> dict:
    return {
        "name": "compression_study",
        "model": {"type": "deepfm", "hidden": [64, 32]},
        "sparse": [{"name": n, "dim": DIM, "max_values": k, "combiner": "mean",
                    "embedding": {"kind": "plain", "rows": v, "hashed": False}}
                   for n, v, k in FEATURES],
        "dense": [{"name": "d0"}, {"name": "d1", "transform": "log1p"}, {"name": "d2"}],
        "data": {"format": "synthetic",
                 "synthetic": {"num_train": num_train, "num_eval": num_eval, "seed": data_seed,
                               "zipf": zipf, "vocab": {n: v for n, v, _ in FEATURES},
                               "structure": structure}},
        "train": {"batch_size": 1024, "epochs": 1, "learning_rate": 0.005, "seed": seed,
                  "devices": "cpu", "progress": False},
    }


def scheme_for(kind: str, vocab: int, budget_rows: int) -> dict:
    """Embedding dict for one compressed feature with at most ``budget_rows`` rows of width
    DIM+1 (deepfm tables carry a first-order column); concat halves the row width."""
    if kind == "plain":
        return {"kind": "plain", "rows": vocab, "hashed": False}
    if kind == "hash":
        return {"kind": "plain", "rows": max(budget_rows, 1)}
    if kind in ("qr", "qr_mul", "qr_concat"):
        rows = budget_rows * (2 if kind == "qr_concat" else 1)   # concat rows are half as wide
        # m + ceil(vocab / m) <= rows  ->  the smaller root of m^2 - rows*m + vocab = 0
        disc = rows * rows - 4 * vocab
        m = math.ceil((rows - math.sqrt(disc)) / 2) if disc >= 0 else math.isqrt(vocab)
        m = min(max(m, 2), vocab - 1)
        comb = {"qr": "add", "qr_mul": "multiply", "qr_concat": "concat"}[kind]
        return {"kind": "multihash", "strategy": "qr", "vocab": vocab, "m": m, "hashed": False,
                "combiner": comb}
    if kind == "freq":
        # exact rows for the hot ids (each costs DIM+1 floats plus its 8-byte id), qr for the tail
        width = DIM + 1
        hot = max(1, min(vocab - 1, int(FREQ["share"] * budget_rows * width / (width + 2))))
        tail = scheme_for(FREQ["tail"], vocab, max(4, budget_rows - math.ceil(hot * (width + 2) / width)))
        return {"kind": "freq_aware", "hot_rows": hot, "admit_count": FREQ["admit"], "tail": tail}
    if kind == "kway":
        half = max(budget_rows // 2, 1)
        return {"kind": "multihash", "strategy": "kway", "sizes": [half, half + 1], "combiner": "add"}
    if kind in ("binary_code", "bc_skip"):
        bits = max(1, math.ceil(math.log2(vocab)))
        best = 1
        for t in range(1, min(bits, 24) + 1):
            sch = K.BinaryCodeKeys(bits=bits, block_bits=t, hashed=False,
                                   strategy="skip" if kind == "bc_skip" else "succession")
            if sum(sch.subtable_rows) <= budget_rows:
                best = t
        return {"kind": "binary_code", "bits": bits, "block_bits": best, "hashed": False,
                "strategy": "skip" if kind == "bc_skip" else "succession"}
    raise ValueError(kind)


def variant(base: dict, kind: str, ratio: float) -> dict:
    d = json.loads(json.dumps(base))
    if kind == "plain":
        return d
    plain_rows = sum(v for _, v, _ in FEATURES)
    small_rows = sum(v for _, v, _ in FEATURES if v < COMPRESS_MIN)
    big_rows = plain_rows - small_rows
    budget = plain_rows / ratio - small_rows
    if budget <= 0:
        raise ValueError(f"ratio {ratio} is impossible with the small tables kept plain")
    for f in d["sparse"]:
        v = d["data"]["synthetic"]["vocab"][f["name"]]
        if v >= COMPRESS_MIN:
            f["embedding"] = scheme_for(kind, v, int(budget * v / big_rows))
    return d


def emb_bytes(cfg) -> int:
    from recstrata.training.spec import table_width

    return sum(4 * s.num_params(table_width(dim, cfg.model.type))
               for s, dim, _ in cfg.tables().values())


def run_one(d: dict) -> dict:
    from recstrata.training.trainer import Trainer

    cfg = load_config(d)
    t0 = time.time()
    tr = Trainer(cfg, log=lambda s: None)
    hist = tr.train()
    return {"auc": hist[-1].eval_auc, "logloss": hist[-1].eval_logloss,
            "bytes": emb_bytes(cfg), "seconds": time.time() - t0,
            "schemes": {f.name: f.scheme.to_dict() for f in cfg.sparse
                        if d["data"]["synthetic"]["vocab"][f.name] >= COMPRESS_MIN}}


def plot(fig, rows) -> None:
    """Main figure: relative AUC loss against compression ratio, per scheme."""
    ax = fig.add_subplot(1, 1, 1)
    for data, ls in zip(DATASETS, ("-", "--")):
        for kind in sorted({r["scheme"] for r in rows if r["scheme"] != "plain"}):
            pts = sorted((r["ratio"], 100 * r["rel_auc_loss"]) for r in rows
                         if r["scheme"] == kind and r["data"] == data)
            if pts:
                ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ls=ls,
                        label=f"{kind} ({data})")
    ax.axhline(0.3, color="red", ls="--", lw=1, label="0.3% goal")
    ax.axvline(20, color="grey", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_xlabel("compression ratio (plain embedding bytes / scheme bytes)")
    ax.set_ylabel("relative AUC loss vs plain (%)")
    ax.set_title("Embedding compression on synthetic Zipf data (DeepFM)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="reduced run (fewer examples, ratios, schemes)")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "out"))
    ap.add_argument("--num-train", type=int)
    ap.add_argument("--zipf", type=float, default=1.1, help="Zipf exponent of the id frequencies")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--tag", default="", help="suffix of the output file names")
    ap.add_argument("--kinds", help="comma-separated schemes to run (default: per mode)")
    ap.add_argument("--ratios", help="comma-separated target ratios (default: per mode)")
    ap.add_argument("--data", choices=DATASETS + ("both",), default="both",
                    help="synthetic teacher(s): independent id parameters, structured, or both")
    ap.add_argument("--freq-tail", choices=("hash", "qr"), default=FREQ["tail"],
                    help="scheme of the freq_aware tables' tail")
    ap.add_argument("--freq-share", type=float, default=FREQ["share"],
                    help="share of a freq_aware table's bytes spent on exact hot rows")
    ap.add_argument("--freq-admit", type=int, default=FREQ["admit"],
                    help="sketch count at which an id becomes hot")
    ap.add_argument("--data-seed", type=int, default=0,
                    help="seed of the synthetic teacher and data (a held-out check of tuned settings)")
    args = ap.parse_args(argv)
    FREQ.update(tail=args.freq_tail, share=args.freq_share, admit=args.freq_admit)
    stem = "compression" + ("_quick" if args.quick else "") + args.tag
    os.makedirs(args.out, exist_ok=True)
    if args.quick:
        num_train, num_eval = args.num_train or 200_000, 50_000
        ratios = [10, 20, 50]
        kinds = ["hash", "qr", "kway", "binary_code", "freq"]
        plain_seeds = [0, 1]
    else:
        num_train, num_eval = args.num_train or 1_000_000, 100_000
        ratios = [5, 10, 20, 50, 200]
        kinds = list(ALL_KINDS)
        plain_seeds = [0, 1, 2]

    if args.kinds:
        kinds = args.kinds.split(",")
        for k in kinds:
            if k not in ALL_KINDS:
                ap.error(f"unknown scheme {k!r}; choose from {ALL_KINDS}")
    if args.ratios:
        ratios = [float(r) for r in args.ratios.split(",")]

    from recstrata.training import synthetic

    datasets = list(DATASETS) if args.data == "both" else [args.data]
    md = [f"# Embedding compression study ({'quick' if args.quick else 'full'})", "",
          f"Synthetic data: {num_train} train / {num_eval} eval examples, zipf {args.zipf}, "
          f"features {[(n, v) for n, v, _ in FEATURES]} (vocab >= {COMPRESS_MIN} compressed), "
          f"DeepFM dim {DIM}, {args.epochs} epoch(s), Adam lr 0.005, batch 1024; teachers "
          f"{datasets} (recstrata.training.synthetic).", "",
          f"Command: `python perf/compression_study.py {' '.join(argv if argv is not None else sys.argv[1:])}`"]
    rows, per_data = [], {}
    for data in datasets:
        base = base_config(num_train, num_eval, 0, args.zipf, data, args.data_seed)
        base["train"]["epochs"] = args.epochs
        teacher = synthetic.teacher_auc(load_config(base))
        print(f"[{data}] synthetic: {num_train} train / {num_eval} eval examples, zipf {args.zipf}; "
              f"teacher AUC {teacher:.5f}", flush=True)
        plains = []
        for s_ in plain_seeds:
            d = json.loads(json.dumps(base))
            d["train"]["seed"] = s_
            r = run_one(d)
            plains.append(r)
            print(f"[{data}] plain seed {s_}: AUC {r['auc']:.5f} logloss {r['logloss']:.5f} "
                  f"{r['bytes'] / 1e6:.2f} MB {r['seconds']:.0f}s", flush=True)
        plain_auc = float(np.median([p["auc"] for p in plains]))
        plain_bytes = plains[0]["bytes"]
        noise = float(np.ptp([p["auc"] for p in plains]) / plain_auc) if len(plains) > 1 else 0.0
        drows = [{"data": data, "scheme": "plain", "target": 1, "ratio": 1.0, "auc": plain_auc,
                  "rel_auc_loss": 0.0, "logloss": float(np.median([p["logloss"] for p in plains])),
                  "bytes": plain_bytes, "seconds": float(np.median([p["seconds"] for p in plains]))}]
        for ratio in ratios:
            for kind in kinds:
                d = variant(base, kind, ratio)
                r = run_one(d)
                row = {"data": data, "scheme": kind, "target": ratio, "ratio": plain_bytes / r["bytes"],
                       "auc": r["auc"], "rel_auc_loss": (plain_auc - r["auc"]) / plain_auc,
                       "logloss": r["logloss"], "bytes": r["bytes"], "seconds": r["seconds"],
                       "example_scheme": r["schemes"]["f0"]}
                drows.append(row)
                print(f"[{data}] {kind:<12} target {ratio:>4}x actual {row['ratio']:7.1f}x AUC "
                      f"{row['auc']:.5f} rel loss {100 * row['rel_auc_loss']:+.3f}% {row['seconds']:.0f}s",
                      flush=True)
        rows += drows
        # verdict: best scheme at >= 20x
        cands = [r for r in drows if r["scheme"] != "plain" and r["ratio"] >= 20]
        best = min(cands, key=lambda r: r["rel_auc_loss"]) if cands else None
        per_data[data] = {"teacher_auc": teacher, "plain_auc": plain_auc, "noise": noise,
                          "plains": plains, "best": best}
        md += ["", f"## {data} teacher", "",
               f"Teacher AUC (ceiling): {teacher:.5f}. Plain AUC (median of {len(plains)} seeds): "
               f"{plain_auc:.5f}; seed-to-seed spread {100 * noise:.3f}% of AUC.", "",
               "| scheme | target | actual ratio | emb. MB | AUC | rel. AUC loss | logloss | s |",
               "|---|---|---|---|---|---|---|---|"]
        for r in drows:
            md.append(f"| {r['scheme']} | {r['target']}x | {r['ratio']:.1f}x | {r['bytes'] / 1e6:.2f} | "
                      f"{r['auc']:.5f} | {100 * r['rel_auc_loss']:+.3f}% | {r['logloss']:.5f} | "
                      f"{r['seconds']:.0f} |")
        if best:
            md += ["", f"Best at >= 20x: **{best['scheme']}** at {best['ratio']:.1f}x, relative AUC "
                   f"loss {100 * best['rel_auc_loss']:+.3f}% (goal <= 0.3%: "
                   f"{'met' if best['rel_auc_loss'] <= 0.003 else 'NOT met'})."]
    with open(os.path.join(args.out, stem + ".md"), "w") as fh:
        fh.write("\n".join(md) + "\n")
    with open(os.path.join(args.out, stem + ".json"), "w") as fh:
        json.dump({"datasets": {k: {kk: vv for kk, vv in v.items() if kk != "best"}
                                for k, v in per_data.items()}, "rows": rows}, fh, indent=1)
    # the documented figures come from --quick runs (perf/RESULTS.md), so both go to results/
    save_plot(plot_path("compression" + args.tag), lambda fig: plot(fig, rows), figsize=(7, 4.5))
    print("\n".join(md), flush=True)

    def freq_loss(data, target):
        got = [r for r in rows if r["data"] == data and r["scheme"] == "freq" and r["target"] == target]
        return round(got[0]["rel_auc_loss"], 5) if got else None

    result = {"quick": args.quick, "zipf": args.zipf, "num_train": num_train, "epochs": args.epochs,
              "freq_aware_loss_50x_structured": freq_loss("structured", 50),
              "freq_aware_loss_10x_unstructured": freq_loss("independent", 10),
              "datasets": {k: {"teacher_auc": round(v["teacher_auc"], 5),
                               "plain_auc": round(v["plain_auc"], 5),
                               "plain_seed_spread_rel": round(v["noise"], 5),
                               "best_at_20x": ({"scheme": v["best"]["scheme"],
                                                "ratio": round(v["best"]["ratio"], 1),
                                                "rel_auc_loss": round(v["best"]["rel_auc_loss"], 5)}
                                               if v["best"] else None)}
                           for k, v in per_data.items()},
              "runs": [{"data": r["data"], "scheme": r["scheme"], "ratio": round(r["ratio"], 1),
                        "auc": round(r["auc"], 5), "rel_auc_loss": round(r["rel_auc_loss"], 5)}
                       for r in rows]}
    print_result(result, compact=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
