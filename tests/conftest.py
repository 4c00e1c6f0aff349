"""Shared fixtures: tiny random-init models of every family, the packaged MiniLM, tiny corpora. No network."""

from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
import torch  # noqa: E402

from stcstore.features import ExtractConfig, extract  # noqa: E402
from stcstore.fit.probe import PathConfig  # noqa: E402
from stcstore.ingest import IngestConfig, ingest  # noqa: E402
from stcstore.models import LoadedModel, default_model_path, load_model, wrap_model  # noqa: E402

torch.set_num_threads(1)

TEXTS = [
    "a gorgeous, witty, seductive movie.",
    "the plot is nothing but boilerplate clichés from start to finish,",
    "ok",
    "It is a film that will have people walking out halfway through and others cheering at the credits.",
    "@user I can't believe this happened again #angry",
    "wow",
    "the acting, costumes, music, cinematography and sound are all astounding given the production's "
    "austere locales.",
    "so bad it's good? no. just bad.",
]


def tiny_config(family: str):
    """A 3-block random-init config of each family, small enough to run in milliseconds."""
    from transformers import (
        BertConfig,
        DistilBertConfig,
        GemmaConfig,
        GPT2Config,
        GPTNeoXConfig,
        LlamaConfig,
        MistralConfig,
        Qwen2Config,
        RobertaConfig,
    )

    common = dict(vocab_size=30522)
    if family == "bert":
        return BertConfig(num_hidden_layers=3, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                          max_position_embeddings=128, **common)
    if family == "roberta":
        # pad_token_id must match the tokenizer's (the BERT vocab pads with 0)
        return RobertaConfig(num_hidden_layers=3, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                             max_position_embeddings=130, pad_token_id=0, **common)
    if family == "distilbert":
        return DistilBertConfig(n_layers=3, dim=32, hidden_dim=64, n_heads=4, max_position_embeddings=128, **common)
    if family == "gpt2":
        return GPT2Config(n_layer=3, n_embd=32, n_head=4, n_inner=64, n_positions=128, bos_token_id=101, eos_token_id=102,
                          **common)
    if family == "gpt_neox":
        return GPTNeoXConfig(num_hidden_layers=3, hidden_size=32, intermediate_size=64, num_attention_heads=4,
                             max_position_embeddings=128, bos_token_id=101, eos_token_id=102, **common)
    gated = dict(num_hidden_layers=3, hidden_size=32, intermediate_size=48, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=128, bos_token_id=101, eos_token_id=102,
                 pad_token_id=0, **common)
    if family == "llama":
        return LlamaConfig(**gated)
    if family == "mistral":
        return MistralConfig(**gated)
    if family == "qwen2":
        return Qwen2Config(**gated)
    if family == "gemma":
        return GemmaConfig(head_dim=8, **gated)
    raise ValueError(family)


FAMILIES = ["bert", "roberta", "distilbert", "gpt2", "gpt_neox", "llama", "mistral", "qwen2", "gemma"]


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def bert_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(default_model_path())


def build_tiny(family: str, tokenizer) -> LoadedModel:
    from transformers import AutoModel

    torch.manual_seed(1234)
    model = AutoModel.from_config(tiny_config(family), attn_implementation="eager")
    tok = type(tokenizer).from_pretrained(default_model_path())
    return wrap_model(model, tok, f"tiny-{family}")


@pytest.fixture(scope="session")
def minilm() -> LoadedModel:
    return load_model("default")


@pytest.fixture(scope="session")
def tiny_gpt2_dir(tmp_path_factory, bert_tokenizer) -> Path:
    """A tiny GPT-2 saved as a local model directory (weights + tokenizer), loadable by path."""
    from transformers import AutoTokenizer, GPT2Model

    d = tmp_path_factory.mktemp("tiny-gpt2")
    torch.manual_seed(7)
    GPT2Model(tiny_config("gpt2")).save_pretrained(d)
    AutoTokenizer.from_pretrained(default_model_path()).save_pretrained(d)
    return d


def pad(lm: LoadedModel, seqs: list[list[int]], side: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Token-id lists -> (input_ids, attention_mask) [B, T], padded on `side` with the tokenizer's own pad."""
    enc = lm.tokenizer.pad({"input_ids": seqs}, padding=True, padding_side=side, return_tensors="pt",
                           return_attention_mask=True)
    return enc["input_ids"], enc["attention_mask"]


def write_jsonl(path: Path, records: list) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write((r if isinstance(r, str) else json.dumps(r)) + "\n")
    return path


@pytest.fixture
def corpus(tmp_path) -> Path:
    """A small labelled JSONL corpus with train/validation/test splits."""
    recs = []
    for i in range(60):
        t = TEXTS[i % len(TEXTS)] + f" (variant {i})"
        split = "train" if i < 40 else ("validation" if i < 50 else "test")
        recs.append({"id": f"t{i}", "text": t, "label": i % 2, "split": split})
    return write_jsonl(tmp_path / "corpus.jsonl", recs)


@dataclass
class CliResult:
    returncode: int
    stdout: str
    stderr: str


def cli(*args: str) -> CliResult:
    """`stcstore ARGS` in this process (no interpreter start, no torch import per call): its exit code and
    what it printed on stdout and stderr."""
    from stcstore.cli.main import run

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = run([str(a) for a in args])
    return CliResult(code, out.getvalue(), err.getvalue())


def run_cli(args: list[str]) -> subprocess.Popen:
    """`stcstore ARGS` in a subprocess, offline, unbuffered (stdout and stderr piped): for tests where a
    real process is the point (SIGKILL, the lock, the installed script)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "stcstore.cli.main", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def sigkill_when(proc, ready, timeout: float = 120) -> bool:
    """SIGKILL `proc` as soon as `ready()` is true (polled every 2 ms); False if it ended first."""
    deadline = time.time() + timeout
    killed = False
    while proc.poll() is None and time.time() < deadline:
        if ready():
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
        time.sleep(0.002)
    proc.wait(timeout=60)
    return killed


# ------------------------------------------------------------------ learnable corpora and fitted stores
WORDS = {
    "0": ["awful", "boring", "dull", "terrible", "waste", "bad"],
    "1": ["great", "wonderful", "brilliant", "moving", "superb", "good"],
    "2": ["rain", "monday", "train", "office", "queue", "bus"],
}
FILLER = "the a film it was and this story really so".split()


def learnable_corpus(path: Path, n: int, classes: tuple[str, ...], seed: int = 0, splits=True) -> Path:
    rng = random.Random(seed)
    recs = []
    for i in range(n):
        label = classes[i % len(classes)]
        words = [rng.choice(FILLER) for _ in range(rng.randint(2, 8))] + [rng.choice(WORDS[label])
                                                                        for _ in range(rng.randint(1, 2))]
        rng.shuffle(words)
        rec = {"id": f"r{i}", "text": " ".join(words), "label": label}
        if splits:
            rec["split"] = ("train", "train", "train", "validation", "test")[i % 5]
        recs.append(rec)
    return write_jsonl(path, recs)


def tiny_bert_store(tmp: Path, tokenizer, classes=("0", "1"), n=200, splits=True) -> tuple[Path, object]:
    """A store of a learnable corpus with tiny-BERT features (dataset "d", model "tiny-bert")."""
    st = tmp / "st"
    src = learnable_corpus(tmp / "c.jsonl", n, classes, splits=splits)
    ingest(st, [src], IngestConfig("d", split_field="split" if splits else None))
    lm = build_tiny("bert", tokenizer)
    extract(st, ExtractConfig("d", model="tiny-bert", batch_size=16), lm=lm)
    return st, lm


FAST = dict(etas=(0.3, 0.8), path=PathConfig(n_lambdas=10, min_ratio=1e-3))
