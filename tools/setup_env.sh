#!/usr/bin/env bash
# Install the pinned stack of requirements.txt into a virtual environment and check it.
#
#   bash tools/setup_env.sh            # prints nothing but progress; last line is the env path
#   source "$(bash tools/setup_env.sh --print-path)/bin/activate"
#   bash tools/setup_env.sh --active   # into the active environment instead (see below)
#
# The environment lives outside the clone, keyed by the hash of the requirements, so a second
# run (or a CI run on the same machine) does nothing unless the requirements changed:
#   ${MMVIT_EXT_ENV_ROOT:-$HOME/.cache/mmvit_ext}/env-<hash>
# Set MMVIT_EXT_ENV to use a fixed path instead. The script only ever deletes a folder that it
# created itself (it holds the marker file .mmvit_ext_env); any other existing folder stops it.
# GPU users: set FORCE_CUDA=1 (mmcv is then built with its CUDA ops; needs nvcc matching
# torch's CUDA).
#
# --active: install into the environment of `python` (or $PYTHON), e.g. an activated venv or
# conda env. What is already installed at a version the toolboxes accept is kept; a missing
# package is installed at its pin, mmcv is built with its compiled ops only when it is missing,
# and a package at a version that does not fit stops the script (nothing is replaced).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "[setup_env] $*" >&2; }
python=${PYTHON:-python3}
wheelhouse=${MMVIT_EXT_WHEELHOUSE:-$repo/../shared/wheelhouse}

# mmcv: the full build with compiled ops. A prebuilt wheel of exactly this build may be given as
# a cache (../shared/wheelhouse or MMVIT_EXT_WHEELHOUSE); otherwise pip builds the sdist
# (about 20 minutes on 2 cores).
install_mmcv() {  # "$@": the pip command to use
    local find_links=()
    if [[ -d "$wheelhouse" && "${FORCE_CUDA:-0}" != 1 ]]; then
        find_links=(--find-links "$wheelhouse")
    fi
    log "mmcv 2.1.0 with ops ${find_links[*]:-(building from source)}"
    MMCV_WITH_OPS=1 FORCE_CUDA=${FORCE_CUDA:-0} MAX_JOBS=${MAX_JOBS:-2} \
        "$@" install --progress-bar off "${find_links[@]}" --no-build-isolation --no-deps \
        "mmcv==2.1.0" >&2
}

if [[ "${1:-}" == "--active" ]]; then
    "$python" -c 'import sys; assert sys.version_info >= (3, 9), "Python >= 3.9 needed"'
    log "installing into the environment of $("$python" -c 'import sys; print(sys.prefix)')"
    "$python" -c 'import packaging' 2>/dev/null || "$python" -m pip install -q packaging >&2
    # One line per requirement that is missing; exit 1 (with the reason) when one is installed
    # at a version that does not fit.
    missing=$("$python" "$repo/tools/check_env.py" --missing)
    pip=("$python" -m pip install --progress-bar off)
    if grep -qx 'torch' <<<"$missing"; then
        "${pip[@]}" "torch==2.13.0,!=2.13.0+cpu" "torchvision==0.28.0" >&2
    fi
    if grep -qx 'mmcv' <<<"$missing"; then
        "${pip[@]}" "setuptools<82" wheel ninja >&2
        install_mmcv "$python" -m pip
    fi
    others=$(grep -vx -e torch -e mmcv <<<"$missing" || true)
    if [[ -n "$others" ]]; then
        # the pins of requirements.txt for what is missing, nothing else
        mapfile -t pins < <(grep -iE "^($(paste -sd'|' <<<"$others"))(==|<|>|!|$)" \
            "$repo/requirements.txt")
        "${pip[@]}" "${pins[@]}" >&2
    fi
    "${pip[@]}" --no-deps --no-build-isolation -e "$repo" >&2
    "$python" "$repo/tools/check_env.py" >&2
    exit 0
fi

# Bump INSTALL_REV when this script changes how the environment is built.
INSTALL_REV=1
key=$( (echo "$INSTALL_REV"; cat "$repo/requirements.txt") | sha256sum | cut -c1-12)
env_dir=${MMVIT_EXT_ENV:-${MMVIT_EXT_ENV_ROOT:-$HOME/.cache/mmvit_ext}/env-$key}
if [[ "${1:-}" == "--print-path" ]]; then echo "$env_dir"; exit 0; fi

marker="$env_dir/.mmvit_ext_env"  # written right after the venv is created: "this is ours"
stamp="$env_dir/.mmvit_ext_installed"  # written after a complete, checked install
if [[ -f "$stamp" ]]; then
    # Already installed: only make sure this clone is the one the env imports.
    "$env_dir/bin/pip" install -q --no-deps --no-build-isolation -e "$repo" >/dev/null
    "$env_dir/bin/python" "$repo/tools/check_env.py" >&2
    echo "$env_dir"; exit 0
fi
if [[ -e "$env_dir" && ! -f "$marker" ]]; then
    log "ERROR: $env_dir exists and was not created by this script (no $(basename "$marker")"
    log "file in it); refusing to delete or modify it."
    log "To install into that environment, activate it and run: bash tools/setup_env.sh --active"
    log "Otherwise set MMVIT_EXT_ENV to a path that does not exist yet, or remove it yourself."
    exit 1
fi

"$python" -c 'import sys; assert sys.version_info >= (3, 9), "Python >= 3.9 needed"'
if [[ -e "$env_dir" ]]; then
    log "removing the unfinished environment $env_dir (created by this script)"
    rm -rf "$env_dir"
fi
log "creating $env_dir"
"$python" -m venv "$env_dir"
touch "$marker"
pip=("$env_dir/bin/pip" install --progress-bar off)

log "build tools and torch (standard build, several GB)"
"${pip[@]}" "setuptools<82" wheel ninja >&2
"${pip[@]}" "torch==2.13.0,!=2.13.0+cpu" "torchvision==0.28.0" >&2
install_mmcv "$env_dir/bin/pip"

log "the rest of requirements.txt and this package"
"${pip[@]}" -r "$repo/requirements.txt" >&2
"${pip[@]}" --no-deps --no-build-isolation -e "$repo" >&2

log "self-check"
"$env_dir/bin/python" "$repo/tools/check_env.py" >&2
touch "$stamp"
echo "$env_dir"
