"""Ingest benchmark: `stcstore ingest` over synthetic Twitter API v1.1 dumps, against the bare cost of
reading them (gunzip + json.loads of every line + picking the text), measured in the same run.

Two daily dumps of --tweets tweets each (about 2.3 KB of JSON per tweet, a fifth of them retweets with
the original nested); the second day repeats --overlap of the first day's tweets, as overlapping
collection windows do. Each step runs in a fresh process so its peak RSS is its own. Prints per day:
tweets/s, MB/s of JSON, ingest time / bare read time, and peak RSS (the second day's includes the
id -> (text hash, label, split) map of the first day's tweets, used to refuse conflicting ids).

    python bench/ingest.py [--tweets 200000] [--overlap 0.3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

WORDS = ("the a so this that just my your new day night love hate great awful game vote rain coffee work "
         "monday friday city team win lose happy sad angry really never always today tomorrow people "
         "music film show news phone train bus school home lol omg why how what").split()
TAGS = ["#news", "#love", "#mondaymotivation", "#nba", "#music", "#election", "#rain", "#tbt"]

_RUN = """
import json, sys, time
t0 = time.perf_counter()
mode = sys.argv[1]
if mode == "bare":
    import gzip
    n = 0
    with gzip.open(sys.argv[2], "rt", encoding="utf-8") as f:
        for line in f:
            t = json.loads(line)
            rt = t.get("retweeted_status")
            src = rt if isinstance(rt, dict) else t
            n += len(src.get("full_text") or src.get("text") or "")
else:
    from stcstore.cli.main import main
    try:
        main(sys.argv[1:])
    except SystemExit as e:
        if e.code:
            raise
# VmHWM belongs to this process image; ru_maxrss would carry the parent's RSS over the exec
hwm = next(int(x.split()[1]) for x in open("/proc/self/status") if x.startswith("VmHWM:"))
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_rss_mb": hwm / 1024}), file=sys.stderr)
"""


def _tweet(rng: random.Random, tid: int) -> dict:
    words = [rng.choice(WORDS) for _ in range(rng.randint(4, 24))]
    text = " ".join(words) + (" " + rng.choice(TAGS) if rng.random() < 0.4 else "") + f" {tid % 9973}"
    uid = rng.randint(1, 10**9)
    user = {"id": uid, "id_str": str(uid), "name": f"user {uid}", "screen_name": f"u{uid}",
            "location": rng.choice(["", "Paris", "Lagos", "Austin, TX", "Seoul"]),
            "description": " ".join(rng.choice(WORDS) for _ in range(rng.randint(0, 20))),
            "followers_count": rng.randint(0, 10**5), "friends_count": rng.randint(0, 5000),
            "statuses_count": rng.randint(1, 10**5), "created_at": "Wed Oct 10 20:19:24 +0000 2018",
            "verified": False, "profile_image_url_https": f"https://pbs.twimg.com/profile_images/{uid}/x.jpg"}
    t = {"created_at": "Sun Nov 22 08:00:00 +0000 2026", "id": tid, "id_str": str(tid), "full_text": text,
         "truncated": False, "display_text_range": [0, len(text)],
         "entities": {"hashtags": [{"text": w[1:], "indices": [0, len(w)]} for w in TAGS if w in text],
                      "user_mentions": [], "urls": [], "symbols": []},
         "source": '<a href="https://mobile.twitter.com" rel="nofollow">Twitter Web App</a>',
         "user": user, "lang": "en", "retweet_count": rng.randint(0, 500), "favorite_count": rng.randint(0, 900),
         "favorited": False, "retweeted": False, "possibly_sensitive": False}
    if rng.random() < 0.2:
        orig = dict(t, id=tid + 10**15, id_str=str(tid + 10**15))
        t = dict(t, full_text="RT @" + user["screen_name"] + ": " + text[:100], retweeted_status=orig)
    return t


def write_dumps(d: Path, n: int, overlap: float, seed: int = 0) -> tuple[Path, Path]:
    rng = random.Random(seed)
    day1, day2 = d / "tweets-2026-11-21.jsonl.gz", d / "tweets-2026-11-22.jsonl.gz"
    repeat = set(rng.sample(range(n), int(n * overlap)))
    again = []
    with gzip.open(day1, "wt", encoding="utf-8", compresslevel=3) as f:
        for i in range(n):
            line = json.dumps(_tweet(rng, 10**12 + i))
            f.write(line + "\n")
            if i in repeat:
                again.append(line)
    with gzip.open(day2, "wt", encoding="utf-8", compresslevel=3) as f:
        for line in again:
            f.write(line + "\n")
        for i in range(n - len(again)):
            f.write(json.dumps(_tweet(rng, 2 * 10**12 + i)) + "\n")
    return day1, day2


def run(args: list[str]) -> dict:
    p = subprocess.run([sys.executable, "-c", _RUN, *args], capture_output=True, text=True)
    if p.returncode:
        sys.exit(f"failed: {' '.join(args)}\n{p.stderr[-3000:]}")
    return json.loads(p.stderr.strip().splitlines()[-1])


def raw_mb(path: Path) -> float:
    with gzip.open(path, "rb") as f:
        return sum(len(b) for b in iter(lambda: f.read(1 << 20), b"")) / 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tweets", type=int, default=200_000, help="tweets per daily dump")
    ap.add_argument("--overlap", type=float, default=0.3, help="share of day 2 repeating day 1")
    ap.add_argument("--keep", default=None, help="work in this directory and keep it")
    a = ap.parse_args()
    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="stcstore-bench-ingest-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        t0 = time.perf_counter()
        days = write_dumps(work, a.tweets, a.overlap)
        print(f"wrote 2 dumps of {a.tweets:,} tweets in {time.perf_counter() - t0:.0f}s "
              f"({days[0].stat().st_size / 1e6:.0f} MB gzipped, {raw_mb(days[0]):.0f} MB of JSON each)")
        store = work / "st"
        shutil.rmtree(store, ignore_errors=True)
        print(f"{'day':5s} {'tweets/s':>9s} {'JSON MB/s':>10s} {'÷ bare read':>12s} {'peak RSS':>9s} "
              f"{'bare read RSS':>13s}")
        for day in days:
            bare = run(["bare", str(day)])
            got = run(["ingest", str(day), "--store", str(store), "--dataset", "tweets", "--json"])
            print(f"{day.name[7:17]:5s} {a.tweets / got['seconds']:9,.0f} {raw_mb(day) / got['seconds']:10.1f} "
                  f"{got['seconds'] / bare['seconds']:12.2f} {got['peak_rss_mb']:7.0f}MB "
                  f"{bare['peak_rss_mb']:11.0f}MB")
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
