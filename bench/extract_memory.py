"""Peak RSS of `stcstore extract` against the dataset size: it must not grow with the number of texts.

Ingests N synthetic short texts (tweet-like, 5-20 words) per size into a fresh store, then extracts them
with a tiny random-init BERT (2 blocks, D=32, d_ff=64, MiniLM's tokenizer; the model's own cost is small,
so what grows is stcstore's) in a fresh process, and prints texts/s and the peak RSS (VmHWM) of that
process. The ratio of the largest to the smallest size's peak is the figure.

    python bench/extract_memory.py [--sizes 100000,400000] [--chunk-rows 4096]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

CHILD = r"""
import json, sys, time, torch
from transformers import AutoTokenizer, BertConfig, BertModel
from stcstore.models import default_model_path, wrap_model
try:
    from stcstore.features import ExtractConfig, extract
except ImportError:  # stcstore 0.1.0
    from stcstore.extract import ExtractConfig, extract
store, chunk_rows = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
torch.set_num_threads(2)
cfg = BertConfig(num_hidden_layers=2, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                 max_position_embeddings=64, vocab_size=30522)
lm = wrap_model(BertModel(cfg), AutoTokenizer.from_pretrained(default_model_path()), "tiny-bert")
t0 = time.perf_counter()
r = extract(store, ExtractConfig("d", max_length=32, chunk_rows=chunk_rows, batch_size=256, max_tokens=16384), lm=lm)
hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:"))
print(json.dumps({"texts": r.texts_extracted, "seconds": time.perf_counter() - t0, "peak_rss_mb": hwm / 1024}))
"""

WORDS = ("the a film it was and this story really so great awful love hate today #news @user lol not very "
         "good bad movie game team win lose day night happy sad why how").split()


def make_texts(path: Path, n: int, seed: int = 0) -> None:
    rng = random.Random(seed)
    with open(path, "w") as f:
        for i in range(n):
            words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(5, 20)))
            f.write(json.dumps({"id": f"t{i}", "text": words, "label": str(i % 2)}) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="100000,400000")
    ap.add_argument("--chunk-rows", type=int, default=4096)
    args = ap.parse_args()
    from stcstore.ingest import IngestConfig, ingest

    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for n in (int(s) for s in args.sizes.split(",")):
            src = Path(tmp) / f"t{n}.jsonl"
            make_texts(src, n)
            store = Path(tmp) / f"st{n}"
            ingest(store, [src], IngestConfig("d"))
            out = subprocess.run([sys.executable, "-c", CHILD, str(store), str(args.chunk_rows)], capture_output=True,
                                 text=True, check=True)
            r = json.loads(out.stdout.strip().splitlines()[-1])
            results.append(r)
            print(f"{n:>9,} texts: {r['texts'] / r['seconds']:,.0f} texts/s, peak RSS {r['peak_rss_mb']:,.0f} MB",
                  flush=True)
    print(f"peak RSS largest / smallest size: {results[-1]['peak_rss_mb'] / results[0]['peak_rss_mb']:.2f}")


if __name__ == "__main__":
    main()
