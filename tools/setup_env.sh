#!/usr/bin/env bash
# Install the pinned stack of requirements.txt into a virtual environment and check it.
#
#   bash tools/setup_env.sh            # prints nothing but progress; last line is the env path
#   source "$(bash tools/setup_env.sh --print-path)/bin/activate"
#
# The environment lives outside the clone, keyed by the hash of the requirements, so a second
# run (or a CI run on the same machine) does nothing unless the requirements changed:
#   ${MMVIT_EXT_ENV_ROOT:-$HOME/.cache/mmvit_ext}/env-<hash>
# Set MMVIT_EXT_ENV to use a fixed path instead. GPU users: set FORCE_CUDA=1 (mmcv is then built
# with its CUDA ops; needs nvcc matching torch's CUDA).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
# Bump INSTALL_REV when this script changes how the environment is built.
INSTALL_REV=1
key=$( (echo "$INSTALL_REV"; cat "$repo/requirements.txt") | sha256sum | cut -c1-12)
env_dir=${MMVIT_EXT_ENV:-${MMVIT_EXT_ENV_ROOT:-$HOME/.cache/mmvit_ext}/env-$key}
if [[ "${1:-}" == "--print-path" ]]; then echo "$env_dir"; exit 0; fi

stamp="$env_dir/.mmvit_ext_installed"
if [[ -f "$stamp" ]]; then
    # Already installed: only make sure this clone is the one the env imports.
    "$env_dir/bin/pip" install -q --no-deps --no-build-isolation -e "$repo" >/dev/null
    "$env_dir/bin/python" "$repo/tools/check_env.py" >&2
    echo "$env_dir"; exit 0
fi

log() { echo "[setup_env] $*" >&2; }
python=${PYTHON:-python3}
"$python" -c 'import sys; assert sys.version_info >= (3, 9), "Python >= 3.9 needed"'
log "creating $env_dir"
rm -rf "$env_dir"
"$python" -m venv "$env_dir"
pip=("$env_dir/bin/pip" install --progress-bar off)

log "build tools and torch (standard build, several GB)"
"${pip[@]}" "setuptools<82" wheel ninja >&2
"${pip[@]}" "torch==2.13.0,!=2.13.0+cpu" "torchvision==0.28.0" >&2

# mmcv: the full build with compiled ops. A prebuilt wheel of exactly this build may be given as
# a cache (../shared/wheelhouse or MMVIT_EXT_WHEELHOUSE); otherwise pip builds the sdist
# (about 20 minutes on 2 cores).
wheelhouse=${MMVIT_EXT_WHEELHOUSE:-$repo/../shared/wheelhouse}
find_links=()
if [[ -d "$wheelhouse" && "${FORCE_CUDA:-0}" != 1 ]]; then find_links=(--find-links "$wheelhouse"); fi
log "mmcv 2.1.0 with ops ${find_links[*]:-(building from source)}"
MMCV_WITH_OPS=1 FORCE_CUDA=${FORCE_CUDA:-0} MAX_JOBS=${MAX_JOBS:-2} \
    "${pip[@]}" "${find_links[@]}" --no-build-isolation --no-deps "mmcv==2.1.0" >&2

log "the rest of requirements.txt and this package"
"${pip[@]}" -r "$repo/requirements.txt" >&2
"${pip[@]}" --no-deps --no-build-isolation -e "$repo" >&2

log "self-check"
"$env_dir/bin/python" "$repo/tools/check_env.py" >&2
touch "$stamp"
echo "$env_dir"
