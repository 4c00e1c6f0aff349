#!/usr/bin/env bash
# The one prepared script for a lent GPU (the `device` tool): every device figure the open issues ask for, in
# one run of about 9 minutes on an H100/H200, results under $OUT (or ./device-results).
#
#   python bench/gpu.py --write-half-model half-minilm      # here, once: the model that travels (46 MB)
#   run: bash bench/device.sh half-minilm                   # there
#
# 1. tests/test_gpu.py: extract (with the pinned, overlapped host copies), fit and score on the GPU agree
#    with the CPU (issue 24 item 5, issue 26 item 4)
# 2. bench/gpu.py: fit with one probe at a time vs several processes sharing the GPU (issue 24 item 5)
# 3. bench/extract.py --random-init gpt2-xl --device cuda --torch-dtype bfloat16: extract / bare forward with
#    float16 values, --stats-only and --dtype int8, --pack, tokens/s and the share of the bf16 peak (issue 26 item 5)
# 4. bench/sink.py --dtype float16,int8: that host's disk, the chunk writer and the scatter at GPT2-XL widths
#    (int8 coding on its cores: issue 26 item 3)
set -uo pipefail
cd "$(dirname "$0")/.."
MODEL="${1:-half-minilm}"
OUT="${OUT:-device-results}"
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
pip install -q --no-deps -e . > "$OUT/install.log" 2>&1
nvidia-smi --query-gpu=name,memory.total --format=csv > "$OUT/gpu.txt" 2>&1
lscpu > "$OUT/lscpu.txt" 2>&1
timeout 150 python -m pytest -q tests/test_gpu.py > "$OUT/test_gpu.log" 2>&1; echo "test_gpu rc=$?" >> "$OUT/summary.txt"
timeout 200 python bench/gpu.py --model "$MODEL" > "$OUT/gpu.json" 2> "$OUT/gpu.err"; echo "gpu.py rc=$?" >> "$OUT/summary.txt"
timeout 190 python bench/extract.py --random-init gpt2-xl --model "$MODEL" --device cuda --torch-dtype bfloat16 \
  --texts 2000 --threads 8 --repeats 2 --quick --pack > "$OUT/extract_gpt2xl.txt" 2> "$OUT/extract_gpt2xl.err"
echo "extract.py rc=$?" >> "$OUT/summary.txt"
timeout 50 python bench/sink.py --dtype float16,int8 --chunks 2 --repeats 2 > "$OUT/sink.txt" 2>&1
echo "sink.py rc=$?" >> "$OUT/summary.txt"
cat "$OUT/summary.txt"; tail -12 "$OUT/extract_gpt2xl.txt"
