"""Benchmark: the whole `stcstore fit` of this checkout against a baseline version, on the same store, in the
same run.

The baseline is a git ref of this repository (default `0e7e055`, release 0.1.0). It is built once into a
private folder (`git worktree` + `pip install --no-deps --target`, cached under $TMPDIR) and run as its own
process, exactly like this checkout's fit, so both get the same cores and their peak RSS is their own:

    python bench/fit.py --store ST --dataset sst6k --threads 2
    python bench/fit.py --store ST --dataset irony --model <path> --no-baseline
    python bench/fit.py --store ST --dataset sst2 --baseline-ref d21cba0 --repeat 3
    python bench/fit.py --store ST --dataset irony --no-baseline --probes lr,slp       # LR vs SLP probes
    python bench/fit.py --store ST --dataset irony --no-baseline --aggregators lr,consolidation
    python bench/fit.py --store ST --dataset joy --no-baseline --metric r2 --fit-args '--task regression'
    python bench/fit.py --store ST --dataset sst6k --no-baseline --workers 1,2 --contention 1,3

Both fits write their tables into the store (a different fit id each: the fit format changed), and the
baseline's classifier goes to a temporary folder. Prints, for each version: probe, aggregate and total
seconds, peak RSS, the chosen configuration and its validation score, then the new ÷ baseline ratios and
the validation difference (goal: ≥ 6x faster on 6k-row data, validation within ±0.003 or better).

`--workers 1,2` runs this checkout's fit once per worker count and prints each one's wall and CPU seconds
(the whole process: user + system), the CPU ratio against the first count (goal: <= 1.15 at 2 against 1)
and whether the fit id and chosen configuration are the same. `--contention 1,3` then repeats the last
worker count with that many busy processes started on the machine by the bench itself (pure-Python spin
loops), and prints wall and CPU seconds and the wall ratio against the quiet run (goals on 2 cores:
<= 2.0x with one, <= 4x with three).

`--aggregators lr,consolidation` adds a fit with `--aggregator consolidation` (SLP probes and the head; LR
probes and the paper's aggregate beside it) and prints its two sides: probe and aggregation seconds,
validation and test scores and the chosen configuration of each.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def baseline_site(ref: str) -> Path:
    """An importable copy of `ref` (its stcstore package, CLI included), built once and cached."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short=12", ref], check=True, capture_output=True,
                         text=True).stdout.strip()
    root = Path(tempfile.gettempdir()) / f"stcstore-baseline-{sha}"
    site = root / "site"
    if (site / "stcstore" / "__init__.py").exists():
        return site
    tree = root / "tree"
    if not tree.exists():
        subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(tree), sha], check=True,
                       capture_output=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "--target",
                    str(site), str(tree)], check=True)
    return site


def run_fit(site: Path | None, args: argparse.Namespace, extra: list[str]) -> dict:
    """One fit in a fresh process (cwd outside the repository, so `site` is what gets imported)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["PYTHONPATH"] = str(site if site is not None else REPO)
    with tempfile.TemporaryDirectory() as tmp:
        argv = ["fit", "--store", str(Path(args.store).resolve()), "--dataset", args.dataset, "--model", args.model,
                "--out", str(Path(tmp) / "clf"), "--json"] + extra
        if args.threads:
            argv += ["--threads", str(args.threads)]
        code = "import sys; from stcstore.cli.main import main; sys.argv = ['stcstore'] + sys.argv[1:]; main()"
        t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_CHILDREN)
        p = subprocess.run([sys.executable, "-c", code, *argv], cwd=tmp, env=env, capture_output=True, text=True)
        r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        sys.exit(f"fit failed ({'baseline' if site else 'this checkout'}):\n{p.stderr[-3000:]}")
    out = json.loads(p.stdout)
    out["process"] = {"wall": time.perf_counter() - t0,  # worker processes are children too: counted
                      "cpu": (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)}
    return out


SPIN = "while True: pass"


def workers_and_contention(args: argparse.Namespace) -> None:
    """This checkout's fit at each --workers count, then under --contention busy processes."""
    counts = [int(w) for w in args.workers.split(",")]
    loads = [int(n) for n in args.contention.split(",")] if args.contention else []
    print(f"CPUs available to this process: {len(os.sched_getaffinity(0))}")
    print(f"{'run':24s} {'wall s':>7s} {'CPU s':>7s} {'probes s':>8s} {'aggr. s':>8s}  fit id, chosen")
    runs: list[tuple[str, dict]] = []

    def show(name: str, r: dict) -> None:
        c, s = r["chosen"], r["seconds"]
        print(f"{name:24s} {r['process']['wall']:7.1f} {r['process']['cpu']:7.1f} {s['probes']:8.1f} "
              f"{s['aggregate']:8.1f}  {r['fit_id']}, {c['kind']}.{c['pooling']} η {c['eta']} L_temp {c['l_temp']}")
        runs.append((name, r))

    for w in counts:
        show(f"--workers {w}", run_fit(None, args, ["--workers", str(w)] + args.fit_args.split()))
    first, last = runs[0][1], runs[-1][1]
    for name, r in runs[1:]:
        print(f"{name} vs --workers {counts[0]}: CPU seconds x{r['process']['cpu'] / first['process']['cpu']:.2f}, "
              f"wall x{r['process']['wall'] / first['process']['wall']:.2f}, same fit id and choice: "
              f"{r['fit_id'] == first['fit_id'] and r['chosen'] == first['chosen']}")
    for n in loads:
        busy = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(n)]
        try:
            r = run_fit(None, args, ["--workers", str(counts[-1])] + args.fit_args.split())
        finally:
            for b in busy:
                b.kill()
                b.wait()
        show(f"--workers {counts[-1]}, {n} busy", r)
        print(f"  wall x{r['process']['wall'] / last['process']['wall']:.2f} the quiet run's; same fit id: "
              f"{r['fit_id'] == last['fit_id']}")


def describe(name: str, r: dict, metric: str) -> str:
    c, s = r["chosen"], r["seconds"]
    return (f"{name:10s} {s['probes']:8.1f} {s['aggregate']:10.1f} {s['total']:8.1f} {r['peak_rss_mb'] / 1024:8.2f} "
            f"{r['stc']['validation'][metric]:9.4f} {r['stc']['test'][metric]:9.4f} "
            f"{r['best_probe']['validation'][metric]:9.4f}  "
            f"{c['kind']}.{c['pooling']} η {c['eta']} L_temp {c['l_temp']}, {c['n_neurons']} neurons")


def compare_aggregators(runs: dict, metric: str) -> None:
    """The consolidation fit's two aggregators, and (as a check) the plain LR fit, which its `lr` entry
    must equal."""
    kc = runs["new consolidation"]
    s = kc["seconds"]
    rows = [("LR probes → LR aggregate (paper)", s["lr_probes"], s["aggregate"], kc["aggregators"]["lr"]),
            ("SLP probes → consolidation head", s["probes"], s["consolidation"], kc["aggregators"]["consolidation"])]
    print(f"\n{'aggregation (one consolidation fit)':36s} {'probes s':>8s} {'aggr. s':>8s} {'val':>7s} {'test':>7s}  "
          f"chosen   [whole fit {s['total']:.1f} s]")
    for name, tp, ta, a in rows:
        c = a["chosen"]
        print(f"{name:36s} {tp:8.1f} {ta:8.1f} {a['validation'][metric]:7.4f} {a['test'][metric]:7.4f}  "
              f"{c['kind']}.{c['pooling']} η {c['eta']} L_temp {c['l_temp']}, {c['n_neurons']} neurons"
              + (f" → {c['frozen_units']} frozen → {c['units']} units" if "units" in c else ""))
    if "new" in runs:
        same = runs["new"]["stc"]["validation"] == kc["aggregators"]["lr"]["validation"]
        print(f"its LR side equals the plain LR fit above: {same}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--store", required=True)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--model", default="default")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--baseline-ref", default="0e7e055", help="git ref of the baseline [default: 0.1.0]")
    ap.add_argument("--no-baseline", action="store_true", help="only this checkout's fit")
    ap.add_argument("--metric", default="accuracy")
    ap.add_argument("--fit-args", default="", help="extra options for this checkout's fit, e.g. '--probe-rows 5000'")
    ap.add_argument("--probes", default="lr", help="per-layer probe kinds to run this checkout's fit with, e.g. "
                    "lr,slp: one fit each, compared with the first")
    ap.add_argument("--aggregators", default="lr", help="lr,consolidation: also a fit with --aggregator "
                    "consolidation, its head and LR aggregate compared with the LR probes' LR aggregate")
    ap.add_argument("--workers", default=None, help="e.g. 1,2: this checkout's fit at each --workers count "
                    "(wall, CPU seconds, same result?)")
    ap.add_argument("--contention", default=None, help="e.g. 1,3: the last --workers count again with that many "
                    "busy processes on the machine")
    ap.add_argument("--repeat", type=int, default=1, help="run the baseline and this checkout's fit this many times, "
                    "alternately, and compare medians (the range of each is printed)")
    ap.add_argument("--baseline-json", default=None, help="reuse the baseline's result from this file when it "
                    "exists (else run it and save it there): for repeated runs while developing")
    args = ap.parse_args()
    if args.workers or args.contention:
        args.workers = args.workers or "2"
        workers_and_contention(args)
        return
    runs = {}
    kinds = [k.strip() for k in args.probes.split(",") if k.strip()]
    repeats: dict[str, list[dict]] = {}
    for _ in range(max(args.repeat, 1)):  # alternately, so that a drift of the machine hits both alike
        if args.baseline_json and Path(args.baseline_json).exists():
            repeats.setdefault("baseline", []).append(json.loads(Path(args.baseline_json).read_text()))
        elif not args.no_baseline:
            repeats.setdefault("baseline", []).append(run_fit(baseline_site(args.baseline_ref), args,
                                                              ["--metric", args.metric]))
            if args.baseline_json:
                Path(args.baseline_json).write_text(json.dumps(repeats["baseline"][-1]))
        for k in kinds:
            repeats.setdefault("new" if k == "lr" else f"new {k}", []).append(
                run_fit(None, args, ["--metric", args.metric, "--probe", k] + args.fit_args.split()))
    for name, rs in repeats.items():
        rs.sort(key=lambda r: r["seconds"]["total"])
        runs[name] = rs[len(rs) // 2]  # the median run
        if len(rs) > 1:
            runs[name]["range"] = {k: (min(r[k1][k] for r in rs), max(r[k1][k] for r in rs))
                                   for k1, k in (("seconds", "total"), ("process", "wall"))}
    if "consolidation" in args.aggregators.split(","):
        runs["new consolidation"] = run_fit(None, args, ["--metric", args.metric, "--aggregator", "consolidation"]
                                            + args.fit_args.split())
    r = runs["new" if "lr" in kinds else f"new {kinds[0]}"]
    print(f"store {args.store}, dataset {args.dataset}: train {r['n_train']}, validation {r['n_validation']}, "
          f"{len(r['classes']) or 'regression, no'} classes; metric {args.metric}; threads {args.threads or 'default'}")
    print(f"{'version':10s} {'probes s':>8s} {'aggregate':>10s} {'total s':>8s} {'RSS GB':>8s} {'STC val':>9s} "
          f"{'STC test':>9s} {'probe val':>9s}  chosen")
    for name, res in runs.items():
        if name != "new consolidation":
            print(describe(name if name.startswith("new") else f"{args.baseline_ref[:9]}", res, args.metric))
    for name, res in runs.items():  # the whole command, from its start to its exit (imports and pool included)
        label = name if name.startswith("new") else args.baseline_ref[:9]
        spread = ""
        if "range" in res:
            (t0, t1), (w0, w1) = res["range"]["total"], res["range"]["wall"]
            spread = f" (median of {args.repeat}; fit {t0:.1f}-{t1:.1f} s, process {w0:.1f}-{w1:.1f} s)"
        print(f"{label:10s} process wall {res['process']['wall']:.1f} s, CPU {res['process']['cpu']:.1f} s{spread}")
    if "new consolidation" in runs:
        compare_aggregators(runs, args.metric)
    news = [n for n in runs if n.startswith("new") and n != "new consolidation"]
    for n in news[1:]:  # the other probe kinds against the first
        a, o = runs[news[0]], runs[n]
        print(f"{n} ÷ {news[0]}: probes {o['seconds']['probes'] / max(a['seconds']['probes'], 1e-9):.2f}, aggregate "
              f"{o['seconds']['aggregate'] / max(a['seconds']['aggregate'], 1e-9):.2f}; best probe validation "
              f"{o['best_probe']['validation'][args.metric] - a['best_probe']['validation'][args.metric]:+.4f}, STC "
              f"validation {o['stc']['validation'][args.metric] - a['stc']['validation'][args.metric]:+.4f}")
    if "baseline" in runs:
        b = runs["baseline"]
        ratio = {k: r["seconds"][k] / max(b["seconds"][k], 1e-9) for k in ("probes", "aggregate", "total")}
        d = r["stc"]["validation"][args.metric] - b["stc"]["validation"][args.metric]
        print(f"new ÷ baseline: probes {ratio['probes']:.3f}, aggregate {ratio['aggregate']:.3f}, total "
              f"{ratio['total']:.3f} (speed-up {1 / ratio['total']:.1f}x; the whole process "
              f"{b['process']['wall'] / r['process']['wall']:.1f}x); peak RSS "
              f"{r['peak_rss_mb'] / b['peak_rss_mb']:.2f}; STC validation {d:+.4f}")


if __name__ == "__main__":
    main()
