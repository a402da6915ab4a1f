#!/usr/bin/env bash
# Writes envs/<env>.linux-64.pin.txt, the explicit package list that
# `snakemake --use-conda` installs instead of solving envs/<env>.yaml
# (Snakemake picks up <env>.<platform>.pin.txt beside an env file by itself).
#
# Run it where conda-forge is reachable, after changing a version in
# requirements.txt and the env files (tests/test_envs.py checks that they
# agree), then commit the pin files:
#
#     python3 -m pip install conda-lock
#     bash workflow/scripts/pin_envs.sh            # all envs
#     bash workflow/scripts/pin_envs.sh train-cuda # one env
#
# The pins are solved with conda-lock, never written by hand. The CUDA env is
# solved for a machine with a CUDA 12.9 driver (--with-cuda 12.9), so this also
# works on a GPU-less machine; the CPU and analysis envs are solved without
# CUDA (--without-cuda), so nothing there can pull a CUDA build.
set -euo pipefail
cd "$(dirname "$0")/../.."

CUDA_VERSION=12.9   # keep equal to cuda-version in envs/train-cuda.yaml
PLATFORM=linux-64

pin() {
    local env=$1
    local cuda_flag
    case $env in
        train-cuda) cuda_flag=(--with-cuda "$CUDA_VERSION") ;;
        *) cuda_flag=(--without-cuda) ;;
    esac
    echo "pinning envs/$env.yaml for $PLATFORM (${cuda_flag[*]})" >&2
    conda-lock lock \
        --file "envs/$env.yaml" \
        --platform "$PLATFORM" \
        --kind explicit \
        "${cuda_flag[@]}" \
        --filename-template "envs/$env.{platform}.pin.txt"
}

if [ $# -eq 0 ]; then
    set -- train-cuda train-cpu analysis
fi
for env in "$@"; do
    [ -f "envs/$env.yaml" ] || { echo "no such env file: envs/$env.yaml" >&2; exit 2; }
    pin "$env"
done
