"""Scoring benchmark: ratios against baselines measured in the same run, on the same tweets.

Prints, for each torch thread count:
  * time of `stcstore score` with a classifier at L_temp = L/2 (its features need blocks 0..L/2-1)
    divided by the time with a classifier at full depth                                goal <= 0.55
  * scoring throughput divided by a bare Hugging Face forward pass to the same depth (tokenize +
    model(**batch) with the later blocks removed, nothing pooled or kept), same length-bucketed batches
  * texts/s of each.
The classifiers are STC-shaped (ffn, mean pooling, 150 neurons per layer, layers 0..L_temp) with
random weights: scoring cost does not depend on the weight values. Each timing is the median of
--repeats runs of the whole `score` call (read the input file, forward, pool, classify, write Parquet).

    python bench/score.py [--texts 2000] [--threads 1,2] [--repeats 3] [--model default]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from stcstore import __version__  # noqa: E402
from stcstore.classifier.classifier import Classifier  # noqa: E402
from stcstore.classifier.manifest import CLASSIFIER_FORMAT  # noqa: E402
from stcstore.core.names import IDENTITY_KEYS  # noqa: E402
from stcstore.core.names import blocks_to_run  # noqa: E402
from stcstore.demo import demo_files  # noqa: E402
from stcstore.features import default_max_length  # noqa: E402
from stcstore.features.compute import length_batches  # noqa: E402
from stcstore.models import load_model  # noqa: E402
from stcstore.score import ScoreConfig, score  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"
NEURONS_PER_LAYER = 150


def tweets(n: int) -> list[str]:
    """Tweets from TweetEval when the shared datasets are there, else the embedded sample."""
    sources = [SHARED / "tweeteval-emotion" / "train.parquet", SHARED / "tweeteval-irony" / "train.parquet"]
    sources = [s for s in sources if s.exists()] or demo_files()
    texts: list[str] = []
    for s in sources:
        texts += pq.read_table(s, columns=["text"]).column("text").to_pylist()
    return texts[:n]


def make_classifier(lm, max_length: int, l_temp: int, path: Path, seed: int = 0) -> Path:
    """An STC-shaped classifier (ffn, mean, layers 0..l_temp) with random weights."""
    rng = np.random.default_rng(seed)
    groups = [{"kind": "ffn", "pooling": "mean", "layer": l,
               "neurons": sorted(rng.choice(lm.adapter.ffn_size, NEURONS_PER_LAYER, replace=False).tolist())}
              for l in range(l_temp + 1)]
    n = NEURONS_PER_LAYER * len(groups)
    fp = lm.fingerprint_fields()
    manifest = {
        "format": CLASSIFIER_FORMAT, "version": 1,  # a linear classifier
        "stcstore_version": __version__,
        "model": {k: fp.get(k) for k in ("model", "model_source", "revision", *IDENTITY_KEYS)},
        "features": {"feature_set": "bench", "dataset": "bench", "max_length": max_length, "dtype": "float16",
                     "torch_dtype": "float32", "feature_format": 1},
        "kind": "ffn", "pooling": "mean", "eta": 0.5, "l_temp": l_temp,
        "blocks_run": blocks_to_run([], [g["layer"] for g in groups]), "groups": groups, "classes": ["0", "1"],
        "metrics": {}, "fit": {},
    }
    arrays = {"coef": rng.normal(size=(1, n)), "intercept": np.zeros(1), "mean": np.zeros(n), "scale": np.ones(n)}
    Classifier(manifest, arrays).save(path)
    return path


def bare_forward(lm, texts: list[str], max_length: int, n_blocks: int, batch_size: int = 64,
                 max_tokens: int = 8192) -> float:
    """Seconds for tokenize + forward through the first n_blocks blocks only, same batches as score."""
    blocks = lm.adapter.blocks
    parent = lm.model.encoder  # BERT-family models (the default MiniLM)
    full = parent.layer
    parent.layer = torch.nn.ModuleList(list(blocks)[:n_blocks])
    try:
        t0 = time.perf_counter()
        seqs = lm.tokenizer(texts, truncation=True, max_length=max_length, return_attention_mask=False,
                            return_token_type_ids=False)["input_ids"]
        with torch.inference_mode():
            for rows in length_batches([len(s) for s in seqs], batch_size, max_tokens):
                enc = lm.tokenizer.pad({"input_ids": [seqs[i] for i in rows]}, return_tensors="pt")
                lm.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
        return time.perf_counter() - t0
    finally:
        parent.layer = full


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="default")
    args = ap.parse_args()

    lm = load_model(args.model)
    if not hasattr(lm.model, "encoder"):
        sys.exit("bench/score.py's bare baseline truncates model.encoder.layer: use a BERT-family model")
    texts = tweets(args.texts)
    max_length = default_max_length(lm)
    n_layers = lm.adapter.n_layers
    half, full = n_layers // 2 - 1, n_layers - 1  # a{l} needs blocks 0..l: L/2 and L blocks
    tmp = Path(tempfile.mkdtemp(prefix="stcstore-bench-score-"))
    src = tmp / "tweets.jsonl"
    import json

    with open(src, "w", encoding="utf-8") as f:
        for i, t in enumerate(texts):
            f.write(json.dumps({"id": str(i), "text": t}) + "\n")
    clfs = {depth: make_classifier(lm, max_length, depth, tmp / f"clf-{depth}") for depth in (half, full)}
    lengths = [len(s) for s in lm.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    print(f"model {lm.name}: {n_layers} blocks; {len(texts)} tweets, median {int(np.median(lengths))} tokens; "
          f"classifiers ffn.mean, {NEURONS_PER_LAYER} neurons per layer, L_temp {half} ({half + 1} blocks) and "
          f"{full} ({full + 1} blocks)")
    print(f"{'threads':>7} {'depth':>6} {'score s':>8} {'bare s':>7} {'score/s':>8} {'bare/s':>7} "
          f"{'score÷bare':>10}")
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        times: dict[int, float] = {}
        for depth, clf in clfs.items():
            runs, bares = [], []
            for r in range(args.repeats + 1):  # the first run warms up
                out = tmp / f"p-{threads}-{depth}-{r}.parquet"
                t0 = time.perf_counter()
                score(ScoreConfig((str(clf),), str(out), input=str(src)), models={lm.name: lm})
                t = time.perf_counter() - t0
                b = bare_forward(lm, texts, max_length, depth + 1)
                if r:
                    runs.append(t)
                    bares.append(b)
            t, b = statistics.median(runs), statistics.median(bares)
            times[depth] = t
            print(f"{threads:>7} {depth + 1:>3}/{n_layers:<2} {t:>8.2f} {b:>7.2f} {len(texts) / t:>8.0f} "
                  f"{len(texts) / b:>7.0f} {b / t:>10.2f}")
        print(f"{threads:>7} time at L_temp = L/2 ÷ full depth: {times[half] / times[full]:.2f} (goal <= 0.55)")


if __name__ == "__main__":
    main()
