#!/usr/bin/env bash
# Large tables (issue 17 item 7): a 200-column and a 100,000-row file, and both at once, run by
# `autoagent run --task csv:...` under a time budget and, side by side, by AutoGluon (the peers'
# script of bench tabular) on the same split, budget and cores; prints the markdown table of
# benchmarks/results/tabular-scale.md: rows, columns, file size, peak RSS (GNU time), wall time,
# trials and test ROC-AUC.
#
# The files are generated (seeded): numeric columns with 5 % missing values, every tenth column
# categorical with 12 levels, and a binary target from a noisy score of a few columns and one
# interaction, so that a model has something to find.
#
# Usage: benchmarks/scripts/tabular-scale.sh AUTOAGENT PEERS_PYTHON [OUT_DIR] [BUDGET] [THREADS]
set -euo pipefail
bin=$(realpath "${1:?the autoagent binary}")
py=${2:?a Python with the peers (scripts/setup-peers.sh --all)}
out=${3:-/tmp/tabular-scale}
budget=${4:-60}
threads=${5:-2}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
gen() { # rows cols name
  [ -s "$out/$3.csv" ] && return
  python3 - "$1" "$2" "$out/$3.csv" "$out/$3.split.json" <<'PY'
import csv, json, math, random, sys
rows, cols, path, split = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
rng = random.Random(7)
levels = [f"level{k}" for k in range(12)]
with open(path, "w", newline="") as f:
    w = csv.writer(f)
    w.writerow([f"x{j}" for j in range(cols)] + ["target"])
    for _ in range(rows):
        x = [rng.gauss(0, 1) for _ in range(cols)]
        score = 1.2 * x[1] - 0.8 * x[2] + 0.9 * x[3] * x[4] + 0.5 * math.sin(3 * x[5]) + rng.gauss(0, 1)
        row = []
        for j, v in enumerate(x):
            if j % 10 == 0:
                k = min(11, max(0, int((v + 3) * 2)))
                score += 0.15 * (k % 3) if j == 0 else 0.0
                row.append(levels[k])
            else:
                row.append("" if rng.random() < 0.05 else f"{v:.5f}")
        w.writerow(row + [1 if score > 0 else 0])
idx = list(range(rows))
rng.shuffle(idx)
cut = rows // 5
json.dump({"train": sorted(idx[cut:]), "test": sorted(idx[:cut])}, open(split, "w"))
PY
}
gen 5000 200 wide
gen 100000 20 tall
gen 100000 200 both
echo "| file | rows × columns | CSV MB | tool | peak RSS MB | wall s | trials | test ROC-AUC |"
echo "|---|---|---|---|---|---|---|---|"
for name in wide tall both; do
  csv="$out/$name.csv"; split="$out/$name.split.json"
  mb=$(du -m "$csv" | cut -f1)
  shape=$(python3 -c "import sys; f=open('$csv'); h=f.readline().count(',')+1; print(f'{sum(1 for _ in f):,} × {h}')")
  rm -rf "$out/run-$name"
  /usr/bin/time -v -o "$out/time-$name.txt" "$bin" run --task "csv:$csv" --target target --split "$split" \
    --budget "${budget}s" --wall-limit "${budget}s" --threads "$threads" --json --out "$out/run-$name" > "$out/summary-$name.json"
  python3 - "$out" "$name" "$mb" "$shape" autoagent <<'PY'
import json, re, sys
out, name, mb, shape, tool = sys.argv[1:]
t = open(f"{out}/time-{name}.txt").read()
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) / 1024
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", t).group(1)
secs = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.split(":"))))
s = json.load(open(f"{out}/summary-{name}.json"))
test = (s.get("final_model") or {}).get("test_accuracy")
print(f"| {name} | {shape} | {mb} | {tool} | {rss:.0f} | {secs:.1f} | {s['trials']} | {test if test is None else round(test, 4)} |")
PY
  /usr/bin/time -v -o "$out/time-$name-ag.txt" "$py" "$here/../reference/tabular_peers.py" --peer autogluon --csv "$csv" \
    --split "$split" --problem binary --budget-seconds "$budget" --threads "$threads" > "$out/autogluon-$name.json" || true
  python3 - "$out" "$name" "$mb" "$shape" "$split" "$csv" <<'PY'
import csv, json, re, sys
out, name, mb, shape, split, path = sys.argv[1:]
t = open(f"{out}/time-{name}-ag.txt").read()
rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", t).group(1)) / 1024
wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", t).group(1)
secs = sum(float(p) * 60 ** i for i, p in enumerate(reversed(wall.split(":"))))
try:
    r = json.load(open(f"{out}/autogluon-{name}.json"))
except Exception:
    print(f"| {name} | {shape} | {mb} | autogluon | {rss:.0f} | {secs:.1f} | — | failed |")
    sys.exit()
test = json.load(open(split))["test"]
y = {}
with open(path) as f:
    for i, row in enumerate(csv.DictReader(f)):
        y[i] = row["target"]
truth = [1 if y[i] == "1" else 0 for i in test]
pos = r["classes"].index("1")
p = [row[pos] for row in r["predictions"]]
order = sorted(range(len(p)), key=lambda i: p[i])
ranks = [0.0] * len(p)
i = 0
while i < len(order):
    j = i
    while j + 1 < len(order) and p[order[j + 1]] == p[order[i]]:
        j += 1
    for k in range(i, j + 1):
        ranks[order[k]] = (i + j) / 2 + 1
    i = j + 1
npos = sum(truth); nneg = len(truth) - npos
auc = (sum(r_ for r_, t_ in zip(ranks, truth) if t_) - npos * (npos + 1) / 2) / (npos * nneg)
print(f"| {name} | {shape} | {mb} | autogluon | {rss:.0f} | {secs:.1f} | — | {auc:.4f} |")
PY
done
