#!/usr/bin/env bash
# Budget use of time budgets on the CIFAR-10 fixture (issue 16 item 1): runs `autoagent run` with
# its defaults for each budget, one after the other, and prints the markdown table of
# benchmarks/results/budget-fixture.md from the runs' summaries and run databases.
# Usage: benchmarks/scripts/budget-fixture.sh [AUTOAGENT] [OUT_DIR] [BUDGETS...]
set -euo pipefail
bin=${1:-target/debug/autoagent}
out=${2:-/tmp/budget-fixture}
budgets=("${@:3}")
[ ${#budgets[@]} -eq 0 ] && budgets=(2m 5m 10m)
data=$(dirname "$0")/../../../shared/data/cifar10-mini
mkdir -p "$out"
for b in "${budgets[@]}"; do
  rm -rf "$out/run-$b"
  "$bin" run --task cifar10 --budget "$b" --data-dir "$data" --no-download --out "$out/run-$b" --json > "$out/summary-$b.json"
done
python3 - "$out" "${budgets[@]}" <<'PY'
import json, sqlite3, sys
out, budgets = sys.argv[1], sys.argv[2:]
print("| budget | trials | promotions | best trial's epochs | its validation % | final model: epochs | test % | trials + proxies + final model (device-s) | budget used | overrun |")
print("|---|---|---|---|---|---|---|---|---|---|")
for b in budgets:
    s = json.load(open(f"{out}/summary-{b}.json"))
    db = sqlite3.connect(f"{out}/run-{b}/run.db")
    rungs = [json.loads(r[0]) for r in db.execute("SELECT rungs FROM trials")]
    promotions = sum(max(len(r) - 1, 0) for r in rungs)
    trained = sum(x["seconds"] for r in rungs for x in r)
    f = s.get("final_model") or {}
    best = s.get("best") or {}
    test = f.get("test_accuracy")
    print(f"| `--budget {b}` | {s['trials']} | {promotions} | {best.get('epochs', 0)} | {best.get('accuracy') or 0:.1f} | "
          f"{f.get('epochs', 0)} | {'—' if test is None else f'{test:.1f}'} | {trained:.0f} s + {s['proxy_seconds']:.0f} s + {f.get('seconds', 0):.0f} s | "
          f"{100 * s['budget_used']:.1f} % | {s['overrun_seconds']:.1f} s |")
PY
