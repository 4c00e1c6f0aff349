"""Benchmark: `stcstore fit` at GPT2-XL shapes, on synthetic stores (no model needed).

Builds (once, kept in --store) a feature set of 48 blocks with hidden width 1,600 and FFN width 6,400 (GPT2-XL;
change with --layers/--hidden/--ffn) of the given kinds and poolings, `--rows` rows split 75/12.5/12.5 %, the
label signal spread densely over every neuron (stcstore.features.synthetic), then runs `stcstore fit` on it
in its own process and prints the fit time by stage, peak RSS, the store size and the validation curve by
L_temp of the chosen (kind, pooling, η).

    python bench/scale.py --rows 6000 --kinds ffn --poolings max          # 3.7 GB store
    python bench/scale.py --rows 60000 --kinds ffn --poolings max         # 37 GB
    python bench/scale.py --rows 6000                                      # every kind and pooling, 14 GB
    python bench/scale.py --rows 3000 --devices cuda,cpu                   # the same fit on a GPU and the CPU
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def dir_gb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**30


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=6000)
    ap.add_argument("--layers", type=int, default=48)
    ap.add_argument("--hidden", type=int, default=1600)
    ap.add_argument("--ffn", type=int, default=6400)
    ap.add_argument("--kinds", default="ffn")
    ap.add_argument("--poolings", default="max")
    ap.add_argument("--classes", type=int, default=2)
    ap.add_argument("--signal", type=float, default=3.0, help="class separation of the strongest block (noise sds)")
    ap.add_argument("--store", default=None, help="store folder [default: $TMPDIR/stcstore-scale-<shape>]")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--fit-args", default="", help="extra fit options, e.g. '--memory-budget 1024'")
    ap.add_argument("--devices", default="", help="fit once per device (e.g. cuda,cpu) and print their time ratio")
    args = ap.parse_args()
    kinds, poolings = tuple(args.kinds.split(",")), tuple(args.poolings.split(","))
    shape = f"{args.rows}r-{args.layers}l-{args.hidden}h-{args.ffn}f-{'+'.join(kinds)}-{'+'.join(poolings)}"
    store = Path(args.store or Path(tempfile.gettempdir()) / f"stcstore-scale-{shape}")
    if not (store / "features").exists():
        from stcstore.features.synthetic import write_synthetic

        t0 = time.perf_counter()
        print(f"writing the synthetic store {store} ...", file=sys.stderr, flush=True)
        write_synthetic(store, "scale", rows=args.rows, layers=args.layers,
                        widths={"hidden": args.hidden, "ffn": args.ffn}, kinds=kinds, poolings=poolings,
                        n_classes=args.classes, signal=args.signal, rows_per_chunk=max(100, min(2000, int(
                            2**30 / (2 * args.layers * len(poolings) * sum(
                                {"hidden": args.hidden, "ffn": args.ffn}[k] for k in kinds))))))
        print(f"  {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    argv = ["fit", "--store", str(store), "--dataset", "scale", "--feature-set", "synthetic", "--kinds", args.kinds,
            "--poolings", args.poolings, "--json"] + args.fit_args.split()
    if args.threads:
        argv += ["--threads", str(args.threads)]
    devices = [d for d in args.devices.split(",") if d] or [None]
    walls = {}
    for device in devices:
        r, walls[device] = run_fit(argv + (["--device", device] if device else []))
        report(args, store, r, walls[device], device)
    if len(devices) > 1:
        print(" ; ".join(f"fit wall {d} ÷ {devices[0]}: {walls[d] / walls[devices[0]]:.2f}" for d in devices[1:]))


def run_fit(argv: list[str]) -> tuple[dict, float]:
    code = "import sys; from stcstore.cli.main import main; sys.argv = ['stcstore'] + sys.argv[1:]; main()"
    t0 = time.perf_counter()
    # cwd outside the repository: `-c` puts the cwd first on sys.path, and the checkout's stcstore/ folder
    # (without cli/, which the install maps in) must not shadow the installed package
    p = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=tempfile.gettempdir())
    wall = time.perf_counter() - t0
    if p.returncode:
        sys.exit(p.stderr[-3000:])
    return json.loads(p.stdout), wall


def report(args: argparse.Namespace, store: Path, r: dict, wall: float, device: str | None) -> None:
    c = r["chosen"]
    print(f"shape: {args.layers} blocks, hidden {args.hidden}, ffn {args.ffn}; kinds {args.kinds}, poolings "
          f"{args.poolings}; rows {args.rows:,} (train {r['n_train']:,}, validation {r['n_validation']:,}); store "
          f"{dir_gb(store):.1f} GB" + (f"; fit on {device}" if device else ""))
    print(f"fit: {wall:.0f} s wall ({', '.join(f'{k} {v:.0f} s' for k, v in r['seconds'].items())}); peak RSS "
          f"{r['peak_rss_mb'] / 1024:.2f} GB; probe rows {r['n_probe_rows']:,}, aggregate search rows "
          f"{r['n_search_rows']:,}")
    print(f"baseline {r['baseline']['validation']['accuracy']}, best probe {r['best_probe']['what']} "
          f"{r['best_probe']['validation']['accuracy']:.4f}, STC {r['stc']['validation']['accuracy']:.4f} "
          f"({c['kind']}.{c['pooling']} η {c['eta']} L_temp {c['l_temp']}, {c['n_neurons']} neurons)")
    try:
        from stcstore import Store

        curve = Store(store).sql(
            "SELECT l_temp, max(val_accuracy) AS best_over_eta, max(val_accuracy) FILTER (WHERE eta = $eta) AS "
            "chosen_eta FROM aggregates WHERE fit_id = $fit AND kind = $kind AND pooling = $pooling GROUP BY l_temp "
            "ORDER BY l_temp", {"eta": c["eta"], "fit": r["fit_id"], "kind": c["kind"], "pooling": c["pooling"]})
    except ImportError as exc:  # a machine without DuckDB (e.g. a lent GPU): the curve is left out
        print(f"(validation curve by L_temp left out: {exc})")
        return
    print("validation accuracy by L_temp (chosen η / best η): " + ", ".join(
        f"{row['l_temp']}: {row['chosen_eta']:.3f}/{row['best_over_eta']:.3f}" for row in curve.iter_rows(named=True)))


if __name__ == "__main__":
    main()
