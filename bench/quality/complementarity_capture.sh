#!/usr/bin/env bash
# Capture one teacher for the complementarity benchmark, one thread, timed.
#   bench/quality/complementarity_capture.sh TEACHER
# Writes runs/bench-complementarity/timings/TEACHER.json (start, end, wall seconds, load
# averages at both ends) so the analysis can report wall times it measured. Resumable:
# re-running continues the capture (the timing file then covers only the last leg).
set -euo pipefail
teacher="$1"
root="$(cd "$(dirname "$0")/../.." && pwd)"
py="${PYTHON:-$root/.venv/bin/python}"
out="$root/runs/bench-complementarity/timings"
mkdir -p "$out"
start=$(date -u +%s.%N); load0=$(cut -d' ' -f1-3 /proc/loadavg)
OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 HF_HUB_OFFLINE=1 PYTHONPATH="$root${PYTHONPATH:+:$PYTHONPATH}" \
  "$py" -m avokit capture "$root/bench/quality/complementarity.yaml" --teacher "$teacher"
rc=$?
end=$(date -u +%s.%N); load1=$(cut -d' ' -f1-3 /proc/loadavg)
printf '{"teacher": "%s", "start_unix": %s, "end_unix": %s, "wall_s": %s, "loadavg_start": "%s", "loadavg_end": "%s", "exit_code": %d, "threads": 1}\n' \
  "$teacher" "$start" "$end" "$(echo "$end - $start" | bc)" "$load0" "$load1" "$rc" > "$out/$teacher.json"
