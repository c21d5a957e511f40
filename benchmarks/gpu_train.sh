#!/usr/bin/env bash
# The zoo's GPU training in one command, from the repository root of a checkout on a CUDA
# machine (no install needed: the checkout is imported directly), on a packed corpus
# (streamgen train --pack-corpus, small enough to copy there):
#
#     bash benchmarks/gpu_train.sh PACK OUT SECONDS [train options...]
#
# trains `default` (Seq-U-Net) and `wavenet-baseline` side by side on one GPU with one recipe,
# each fitted to SECONDS (streamgen train --time-budget), into OUT/default and
# OUT/wavenet-baseline with their logs beside them. Run it again with the same OUT to resume
# (a run stopped at SECONDS + 60 saves a checkpoint first). Options given after SECONDS are
# appended to both runs (the last one given wins), e.g. `--device cpu --window 512` for a check.
set -u
pack="$1" out="$2" budget="$3"
shift 3
mkdir -p "$out"
[ -e streamgen/cli ] || ln -s ../cli streamgen/cli  # what the wheel installs as streamgen.cli
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 STREAMGEN_MODELS="$PWD/models"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$out/gpu.txt"

recipe=(--data "$pack" --window 8192 --batch 16 --steps 20000 --decay-from 10000 --lr 1e-3
        --lr-final 1e-4 --grad-clip 1.0 --start-windows 0.05 --seed 0 --val-every 1000
        --checkpoint-every 2000 --device cuda --time-budget "$budget")

run() {  # NAME KIND CONFIG [options...]
    local name="$1" options=(--kind "$2" --config "$3" "${recipe[@]}")
    shift 3
    [ -f "$out/$name/config.json" ] && options=(--resume --device cuda)  # the run's own recipe
    timeout -s TERM $((${budget%.*} + 60)) python3 -c \
        'import sys; from streamgen.cli.main import main; sys.exit(main(sys.argv[1:]))' \
        train --out "$out/$name" "${options[@]}" "$@" >"$out/$name.log" 2>&1
    echo "$name: exit $?"
}

run default sequnet '{"channels": 32, "levels": 10, "depth": 2, "kernel_size": 5}' "$@" &
run wavenet-baseline wavenet '{"blocks": 3, "layers": 10, "kernel_size": 2, "residual_channels": 24,
    "dilation_channels": 24, "skip_channels": 64}' "$@" &
wait
for name in default wavenet-baseline; do
    echo "== $name"
    tr '\r' '\n' <"$out/$name.log" | grep -v '^ *[0-9]*%\|it/s\|step/s\]$' | tail -12
done
