#!/usr/bin/env bash
# The zoo's GPU training in one command, from the repository root of a checkout on a CUDA
# machine (no install needed: the checkout is imported directly), on a packed corpus
# (streamgen train --pack-corpus, small enough to copy there):
#
#     bash benchmarks/gpu_train.sh PACK OUT SECONDS [train options...]
#
# trains the runs named in RUNS (default: `default` and `wavenet-baseline`; also `sequnet-c48`,
# `sequnet-c64` and `sequnet-c96`, wider candidates, the last published with `--weights-dtype
# float16` to fit the zoo's 16 MB; on one CPU core, benchmarks/results/shapes-cpu-x86-64.md,
# top-p on random weights: C=32 streams at 4.6x real time, C=48 at 2.6x, as fast as the
# wavenet-baseline shape, C=64 at 1.7x, the margin C=32 had before the numba kernel got faster:
# any of them can be the default) side by side on one GPU with one recipe, each fitted to
# SECONDS (streamgen train --time-budget). Each run ends as OUT/NAME.tar.part-aa,
# -ab, ... (its checkpoint folder, training log and console log, in parts of at most 15 MB): few
# files, none too large to come back from a lent GPU machine. To resume a run stopped at
# SECONDS + 60 (it saves a checkpoint first), bring its parts back into OUT and run this again:
# the parts are unpacked and the run continues exactly. Options given after SECONDS are
# appended to both fresh runs (the last one given wins); DEVICE (default cuda) is the device,
# e.g. `DEVICE=cpu bash benchmarks/gpu_train.sh PACK OUT 60 --window 512 --threads 1` to check.
set -u
pack="$1" out="$2" budget="$3"
shift 3
mkdir -p "$out"
if [ ! -e streamgen/cli ]; then  # what the wheel installs as streamgen.cli
    ln -s ../cli streamgen/cli && trap 'rm -f streamgen/cli' EXIT
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 STREAMGEN_MODELS="$PWD/models"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | tee "$out/gpu.txt"

recipe=(--data "$pack" --window 8192 --batch 16 --steps 20000 --decay-from 10000 --lr 1e-3
        --lr-final 1e-4 --grad-clip 1.0 --start-windows 0.05 --seed 0 --val-every 1000
        --checkpoint-every 2000 --device "${DEVICE:-cuda}" --time-budget "$budget")

run() {  # NAME KIND CONFIG [options...]
    local name="$1" options=(--kind "$2" --config "$3" "${recipe[@]}") status log="$out/$1.console.log"
    shift 3
    if compgen -G "$out/$name.tar.part-*" >/dev/null; then  # a run brought back: unpack it
        cat "$out/$name".tar.part-* | tar xf - -C "$out" && rm "$out/$name".tar.part-*
    fi
    if [ -f "$out/$name/config.json" ]; then  # the run's own recipe
        options=(--resume --device "${DEVICE:-cuda}")
        set --
    fi
    timeout -s TERM $((${budget%.*} + 60)) python3 -c \
        'import sys; from streamgen.cli.main import main; sys.exit(main(sys.argv[1:]))' \
        train --out "$out/$name" "${options[@]}" "$@" >>"$log" 2>&1
    status=$?
    tr '\r' '\n' <"$log" | grep -v 'step/s,' | tail -8
    tar cf - -C "$out" "$name" "$name.console.log" | split -b 15M - "$out/$name.tar.part-" &&
        rm -r "${out:?}/$name" "$log"
    echo "$name: exit $status"
}

declare -A kinds=([default]=sequnet [wavenet-baseline]=wavenet [sequnet-c48]=sequnet [sequnet-c64]=sequnet
                 [sequnet-c96]=sequnet)
declare -A configs=(
    [default]='{"channels": 32, "levels": 10, "depth": 2, "kernel_size": 5}'
    [wavenet-baseline]='{"blocks": 3, "layers": 10, "kernel_size": 2, "residual_channels": 24,
                         "dilation_channels": 24, "skip_channels": 64}'
    [sequnet-c48]='{"channels": 48, "levels": 10, "depth": 2, "kernel_size": 5}'
    [sequnet-c64]='{"channels": 64, "levels": 10, "depth": 2, "kernel_size": 5}'
    [sequnet-c96]='{"channels": 96, "levels": 10, "depth": 2, "kernel_size": 5}')
runs=(${RUNS:-default wavenet-baseline})
for name in "${runs[@]}"; do
    [ -n "${kinds[$name]:-}" ] || { echo "unknown run $name; known: ${!kinds[*]}" >&2; exit 2; }
done
for name in "${runs[@]}"; do
    run "$name" "${kinds[$name]}" "${configs[$name]}" "$@" &
done
wait
