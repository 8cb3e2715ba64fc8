#!/usr/bin/env bash
# Instructions per uncontended acquire/release pair, counted by callgrind: (count with N
# pairs - count with 0 pairs) / N, for each lock, with the ratio to the atomic floor.
# Unlike timings, these do not move with machine load.
#   ci/instructions.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-200000}
cargo build --release -q -p ntspin-sim --example lock_instructions
bin=target/release/examples/lock_instructions
count() {
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" "$1" "$2" 2>&1 |
        sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}
floor=""
printf '%-26s %12s %8s\n' lock instr/pair ratio
for lock in floor_atomic_swap_store ntspin_spinlock ntspin_queued spin_mutex parking_lot_mutex std_mutex ntspin_spinlock_verifier nest3_off nest3_standard_no_order nest3_standard; do
    base=$(count "$lock" 0)
    full=$(count "$lock" "$n")
    per=$(awk -v a="$full" -v b="$base" -v n="$n" 'BEGIN { printf "%.1f", (a - b) / n }')
    [ -z "$floor" ] && floor=$per
    ratio=$(awk -v p="$per" -v f="$floor" 'BEGIN { printf "%.2f", p / f }')
    printf '%-26s %12s %7sx\n' "$lock" "$per" "$ratio"
done
