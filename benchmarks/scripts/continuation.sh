#!/usr/bin/env bash
# Continued training (a promoted trial continuing from its checkpoint, each stretch annealing its
# own cosine from the base learning rate: warm restarts) against restarting (the promoted trial
# trained again from scratch, one cosine over all its epochs), on the rungs 1, 3, 9 of ASHA.
# Prints a Markdown table: validation accuracy after 9 epochs and epochs trained to get there.
#   benchmarks/scripts/continuation.sh [AUTOAGENT] [DATA_DIR] [TASK] [SEEDS]
set -euo pipefail
bin=${1:-target/debug/autoagent}
data=${2:-../shared/data/fashion-mnist-mini}
task=${3:-fashion-mnist}
seeds=${4:-"0 1 2"}
arch='|nor_conv_3x3~0|+|avg_pool_3x3~0|skip_connect~1|+|skip_connect~0|skip_connect~1|nor_conv_1x1~2|'
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
data=$(cd "$data" && pwd)

# trial SEED EPOCHS [RESUME_FROM] -> prints "accuracy seconds"
trial() {
  local seed=$1 epochs=$2 from=${3:-}
  local dir="$work/s$seed"
  mkdir -p "$dir"
  local resume=""
  [ -n "$from" ] && resume="\"resume\": \"$dir/ckpt-$from.safetensors\","
  cat > "$dir/spec-$epochs-$from.json" <<JSON
{"version": 1, "task": "$task", "arch": "$arch", "data_dir": "$data",
 "train": {"epochs": $epochs, "seed": $seed, "hflip": false}, $resume
 "checkpoint": "$dir/ckpt-$epochs${from:+c}.safetensors", "out": "$dir"}
JSON
  "$bin" trial --spec "$dir/spec-$epochs-$from.json" 2>/dev/null |
    sed -n 's/^@autoagent-trial //p' | python3 -c '
import json, sys
for line in sys.stdin:
    e = json.loads(line)
    if e["event"] == "finished":
        print(e["accuracy"], e["device_seconds"])'
}

echo "| seed | continued 1→3→9: acc | epochs | seconds | restarted, 9 from scratch: acc | epochs (1+3+9) | seconds |"
echo "|---|---|---|---|---|---|---|"
for s in $seeds; do
  read -r a1 t1 < <(trial "$s" 1)
  read -r a3 t3 < <(trial "$s" 3 1)
  mv "$work/s$s/ckpt-3c.safetensors" "$work/s$s/ckpt-3.safetensors"
  read -r a9 t9 < <(trial "$s" 9 3)
  read -r r3 u3 < <(trial "$s" 3)
  read -r r9 u9 < <(trial "$s" 9)
  cont=$(python3 -c "print(f'{$t1+$t3+$t9:.0f}')")
  rest=$(python3 -c "print(f'{$t1+$u3+$u9:.0f}')")
  echo "| $s | $a9 | 9 | $cont | $r9 | 13 | $rest |"
done
