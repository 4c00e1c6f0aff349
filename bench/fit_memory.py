"""Benchmark: fit's peak RSS against the number of rows, at a fixed memory budget.

Builds (once each, kept under --root) synthetic stores of `--blocks` FFN blocks of width `--ffn` (mean pooling),
split 60/20/20 % train/validation/test, one per `--rows` value, then runs `stcstore fit --memory-budget B` on
each in its own process and prints its peak RSS: the fit process's own (`ru_maxrss`) and that of the whole process
tree (the fit and its probe workers, summed, sampled every 20 ms), the wall time and the ratio of each peak
to the first store's.
Issue 24's goal: the ratio stays within 1.3 from 100k to 400k rows (and beyond), whatever the validation
split's size.

    python bench/fit_memory.py                                   # 100k and 400k rows, budget 512 MB
    python bench/fit_memory.py --rows 100000,400000,1000000 --budget 512
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale import dir_gb  # noqa: E402  (bench/ is not a package)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", default="100000,400000", help="comma-separated row counts")
    ap.add_argument("--blocks", type=int, default=2)
    ap.add_argument("--ffn", type=int, default=1536)
    ap.add_argument("--budget", type=int, default=512, help="--memory-budget of every fit (MB)")
    ap.add_argument("--root", default=None, help="folder of the stores [default: $TMPDIR]")
    ap.add_argument("--fit-args", default="", help="extra fit options, e.g. '--workers 1'")
    args = ap.parse_args()
    root = Path(args.root or tempfile.gettempdir())
    from stcstore.features.synthetic import write_synthetic

    print(f"CPU: {cpu_model()}; {os.cpu_count()} CPUs; budget {args.budget} MB; {args.blocks} FFN blocks x {args.ffn}")
    first = None
    for rows in [int(r) for r in args.rows.split(",")]:
        store = root / f"stcstore-fitmem-{rows}r-{args.blocks}b-{args.ffn}f"
        if not (store / "features").exists():
            t0 = time.perf_counter()
            print(f"writing the synthetic store {store} ...", file=sys.stderr, flush=True)
            write_synthetic(store, "mem", rows=rows, layers=args.blocks, widths={"ffn": args.ffn}, kinds=("ffn",),
                            poolings=("mean",), splits=(0.6, 0.2), rows_per_chunk=2000)
            print(f"  {time.perf_counter() - t0:.0f} s", file=sys.stderr)
        argv = ["fit", "--store", str(store), "--dataset", "mem", "--model", "synthetic", "--kinds", "ffn",
                "--poolings", "mean", "--memory-budget", str(args.budget), "--json"] + args.fit_args.split()
        r, wall, tree = run_sampled(argv)
        first = first or (r["peak_rss_mb"], tree)
        print(f"rows {rows:>10,} (train {r['n_train']:,}, validation {r['n_validation']:,}; store "
              f"{dir_gb(store):.1f} GB): peak RSS of the fit process {r['peak_rss_mb']:,.0f} MB "
              f"({r['peak_rss_mb'] / first[0]:.2f}x the first), of the process tree {tree:,.0f} MB "
              f"({tree / first[1]:.2f}x); wall {wall:.0f} s; aggregate search rows {r['n_search_rows']:,}; "
              f"validation accuracy {r['stc']['validation']['accuracy']:.4f}")


def run_sampled(argv: list[str]) -> tuple[dict, float, float]:
    """Run `stcstore ARGV` in a new process; returns (its --json result, wall seconds, the peak of the summed RSS
    of the process and its descendants, MB)."""
    code = "import sys; from stcstore.cli.main import main; sys.argv = ['stcstore'] + sys.argv[1:]; main()"
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=tempfile.gettempdir())
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], tree_rss_mb(p.pid))
            done.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = p.communicate()
    done.set()
    sampler.join()
    wall = time.perf_counter() - t0
    if p.returncode:
        sys.exit(err[-3000:])
    return json.loads(out), wall, peak[0]


def tree_rss_mb(root: int) -> float:
    """Summed VmRSS of `root` and its descendants (from /proc), MB."""
    children: dict[int, list[int]] = {}
    rss: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            status = Path(f"/proc/{d}/status").read_text()
        except OSError:
            continue
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        children.setdefault(int(fields["PPid"].strip()), []).append(int(d))
        rss[int(d)] = int(fields.get("VmRSS", "0 kB").split()[0])
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo.extend(children.get(pid, []))
    return total / 1024


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


if __name__ == "__main__":
    main()
