"""Extraction benchmark: ratios against baselines measured in the same run, on the same texts.

Prints
  * throughput of `stcstore extract` (tokenize, forward with hooks, pool, write Arrow chunks + stats)
    divided by a bare Hugging Face forward pass (tokenize + model(**batch), no hooks, nothing kept)
    over the same length-bucketed batches                                     goal >= 0.95
  * the same for `extract --stats-only` (statistics, no values), and its bytes per text     goal >= 0.95
  * length-bucketed / unsorted order throughput of extract on a realistic length mix
  * store bytes per text / raw float16 size of the same features
  * early exit: extract with --layers 0-L/2 / full depth (time), showing later blocks are skipped
for each torch thread count given.

    python bench/extract.py [--texts 2000] [--threads 1,2] [--repeats 3] [--model default]
    python bench/extract.py --random-init gpt2-xl --texts 48 --threads 2 --repeats 2 --quick
    python bench/extract.py --device cuda --torch-dtype bfloat16 --random-init gpt2-xl --quick   # on a GPU

--random-init builds a model of that shape with random weights (gpt2-xl: 48 blocks, D=1600, d_ff=6400;
llama-1b: 16 blocks, D=2048, d_ff=8192; or a config.json path) and MiniLM's tokenizer, so the extract ÷ bare
ratio can be measured at true widths on a CPU; --quick measures only that ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
import torch  # noqa: E402

from stcstore.demo import demo_files  # noqa: E402
from stcstore.features.compute import length_batches  # noqa: E402
from stcstore.features.stage import ExtractConfig, default_max_length, dir_bytes, extract  # noqa: E402
from stcstore.ingest import IngestConfig, ingest  # noqa: E402
from stcstore.models import load_model  # noqa: E402

SHARED = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def realistic_texts(n: int) -> list[str]:
    """Half tweets, half movie-review sentences when the shared datasets are there, else the embedded sample."""
    sources = [SHARED / "tweeteval-emotion" / "train.parquet", SHARED / "sst2" / "train.parquet"]
    sources = [s for s in sources if s.exists()] or demo_files()
    texts: list[str] = []
    per = -(-n // len(sources))
    for s in sources:
        texts += pq.read_table(s, columns=["text"]).column("text").to_pylist()[:per]
    # interleave so that unsorted batches mix lengths, as a real dump does
    texts = texts[:n]
    return texts[0::2] + texts[1::2]


def bare_forward(lm, texts: list[str], cfg: ExtractConfig, max_length: int) -> float:
    """Seconds for tokenize + forward over the same length-bucketed batches extract uses (on cfg.device,
    waiting for the device at the end)."""
    t0 = time.perf_counter()
    seqs = lm.tokenizer(texts, truncation=True, max_length=max_length, return_attention_mask=False,
                        return_token_type_ids=False)["input_ids"]
    with torch.inference_mode():
        for rows in length_batches([len(s) for s in seqs], cfg.batch_size, cfg.max_tokens):
            enc = lm.tokenizer.pad({"input_ids": [seqs[i] for i in rows]}, return_tensors="pt")
            lm.model(input_ids=enc["input_ids"].to(cfg.device), attention_mask=enc["attention_mask"].to(cfg.device))
    if cfg.device.startswith("cuda"):
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def timed_extract(base: Path, texts_store: Path, cfg: ExtractConfig, lm) -> tuple[float, int]:
    run = base / f"run-{time.perf_counter_ns()}"
    shutil.copytree(texts_store, run)
    t0 = time.perf_counter()
    extract(dataclasses.replace(cfg, store=str(run)), lm=lm)
    seconds = time.perf_counter() - t0
    size = dir_bytes(run / "features")
    shutil.rmtree(run)
    return seconds, size


RANDOM_SHAPES = {
    "gpt2-xl": ("gpt2", dict(n_layer=48, n_embd=1600, n_head=25, n_inner=6400, n_positions=1024)),
    "llama-1b": ("llama", dict(num_hidden_layers=16, hidden_size=2048, intermediate_size=8192,
                               num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=2048)),
}


def random_model(spec: str, tokenizer: str = "default"):
    """A random-init model of a named shape (or a config.json) with the packaged MiniLM's tokenizer (or the
    tokenizer of the model directory `tokenizer`)."""
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    from stcstore.models import default_model_path, wrap_model

    if spec in RANDOM_SHAPES:
        family, kw = RANDOM_SHAPES[spec]
        config = AutoConfig.for_model(family, vocab_size=30522, bos_token_id=101, eos_token_id=102, **kw)
    else:
        config = AutoConfig.from_pretrained(spec)
    torch.manual_seed(0)
    model = AutoModel.from_config(config)
    source = default_model_path() if tokenizer == "default" else tokenizer
    return wrap_model(model, AutoTokenizer.from_pretrained(source), f"random-{Path(spec).stem}")


def peak_tflops(device: str, dtype: str) -> float | None:
    """Dense matrix-product peak of a known GPU (NVIDIA's figures, without sparsity), else None."""
    if not device.startswith("cuda") or dtype not in ("bfloat16", "float16"):
        return None
    name = torch.cuda.get_device_name(torch.device(device))
    return 989.0 if ("H100" in name or "H200" in name) else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--texts", type=int, default=2000)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--model", default="default")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-tokens", type=int, default=8192)
    ap.add_argument("--random-init", default=None, help="gpt2-xl, llama-1b or a config.json: random weights")
    ap.add_argument("--quick", action="store_true", help="only extract ÷ bare (no unsorted, no early-exit runs)")
    ap.add_argument("--device", default="cpu", help="torch device of the model, e.g. cuda")
    ap.add_argument("--torch-dtype", default="float32", help="model compute dtype: float32, bfloat16, float16")
    ap.add_argument("--pack", action="store_true", help="also time extract --pack (several texts a row)")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="the device's dense peak for --torch-dtype [default: H100/H200 bf16/fp16: 989]")
    args = ap.parse_args()

    texts = realistic_texts(args.texts)
    base = Path(tempfile.mkdtemp(prefix="stcstore-bench-"))
    try:
        src = base / "texts.parquet"
        pq.write_table(pa.table({"id": [f"b{i}" for i in range(len(texts))], "text": texts}), src)
        texts_store = base / "texts-store"
        ingest(texts_store, [src], IngestConfig("bench", split="train"))
        if args.random_init:
            lm = random_model(args.random_init, args.model)
            lm.model.to(args.device, getattr(torch, args.torch_dtype))
        else:
            lm = load_model(args.model, torch_dtype=args.torch_dtype, device=args.device)
        a = lm.adapter
        cfg = ExtractConfig("bench", model=args.model, batch_size=args.batch_size, max_tokens=args.max_tokens,
                            device=args.device, torch_dtype=args.torch_dtype)
        max_length = default_max_length(lm)
        lens = sorted(len(s) for s in lm.tokenizer(texts, truncation=True, max_length=max_length)["input_ids"])
        raw_row = (a.hidden_size * (a.n_layers + 1) + a.ffn_size * a.n_layers) * len(cfg.poolings) * 2
        print(f"model {lm.name}: {a.n_layers} layers, D={a.hidden_size}, d_ff={a.ffn_size}; {len(texts)} texts, "
              f"tokens per text median {lens[len(lens) // 2]}, p90 {lens[int(len(lens) * 0.9)]}, max {lens[-1]}")
        print(f"batch_size {cfg.batch_size}, max_tokens {cfg.max_tokens}, repeats {args.repeats} "
              f"(medians; runs alternate A/B); device {args.device}, compute {args.torch_dtype}")
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            bare, ext, uns, half, stats, i8, packed = [], [], [], [], [], [], []
            half_cfg = ExtractConfig(**{**cfg.__dict__, "layers": f"0-{a.n_layers // 2}"})
            size = 0
            for _ in range(args.repeats):
                bare.append(bare_forward(lm, texts, cfg, max_length))
                s, size = timed_extract(base, texts_store, cfg, lm)
                ext.append(s)
                s, stats_size = timed_extract(base, texts_store, dataclasses.replace(cfg, stats_only=True), lm)
                stats.append(s)
                s, i8_size = timed_extract(base, texts_store, dataclasses.replace(cfg, dtype="int8"), lm)
                i8.append(s)
                if args.pack:
                    packed.append(timed_extract(base, texts_store, dataclasses.replace(cfg, pack=True), lm)[0])
                if args.quick:
                    continue
                s, _ = timed_extract(base, texts_store, ExtractConfig(**{**cfg.__dict__, "bucket": False}), lm)
                uns.append(s)
                s, _ = timed_extract(base, texts_store, half_cfg, lm)
                half.append(s)
            b, e, so, q = (statistics.median(x) for x in (bare, ext, stats, i8))
            u, h = (statistics.median(x) if x else float("nan") for x in (uns, half))
            print(f"\nthreads={threads}")
            print(f"  bare HF forward        {len(texts) / b:8.1f} texts/s")
            print(f"  stcstore extract       {len(texts) / e:8.1f} texts/s   ratio extract/bare = {b / e:.3f}  "
                  f"(goal >= 0.95)")
            print(f"  extract --stats-only   {len(texts) / so:8.1f} texts/s   ratio stats-only/bare = {b / so:.3f}  "
                  f"(goal >= 0.95 on a CPU, 0.85 on a GPU); {stats_size / len(texts):,.0f} bytes per text")
            print(f"  extract --dtype int8   {len(texts) / q:8.1f} texts/s   ratio int8/bare = {b / q:.3f}; "
                  f"{i8_size / len(texts):,.0f} bytes per text ({i8_size / max(size, 1):.3f} of float16's)")
            if packed:
                pk = statistics.median(packed)
                print(f"  extract --pack         {len(texts) / pk:8.1f} texts/s   ratio pack/bare = {b / pk:.3f}, "
                      f"pack / padded extract = {e / pk:.3f}")
            n_tokens = sum(lens)
            flops = 2 * sum(p.numel() for n, p in lm.model.named_parameters() if "embed" not in n and "wte" not in n
                            and "wpe" not in n) * n_tokens / b
            peak = args.peak_tflops or peak_tflops(args.device, args.torch_dtype)
            print(f"  bare forward           {n_tokens / b:8.0f} tokens/s, {flops / 1e12:.2f} TFLOP/s of the "
                  f"weights' matrix products" + (f" = {flops / 1e12 / peak:.1%} of the device's {peak:g} TFLOP/s "
                                                 f"{args.torch_dtype} peak" if peak else ""))
            if not args.quick:
                print(f"  extract, unsorted      {len(texts) / u:8.1f} texts/s   ratio bucketed/unsorted = {u / e:.2f}")
            print(f"  store bytes per text   {size / len(texts):10,.0f}   ratio to raw float16 "
                  f"({raw_row:,} B) = {size / len(texts) / raw_row:.3f}")
            if not args.quick:
                print(f"  early exit             --layers 0-{a.n_layers // 2} time / full depth time = {h / e:.2f}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
