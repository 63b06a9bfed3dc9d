#!/usr/bin/env bash
# Install a locked stack into a virtual environment and check it.
#
#   bash tools/setup_env.sh [--stack upstream|onedl]   # progress on stderr; prints the env path
#   source "$(bash tools/setup_env.sh --print-path)/bin/activate"
#   bash tools/setup_env.sh --active   # into the active environment instead (see below)
#   bash tools/setup_env.sh --relock [--stack onedl]   # regenerate the stack's lock
#
# Stacks: `upstream` (the default): the last OpenMMLab releases on torch 2.13, requirements.txt
# locked in requirements.lock; `onedl`: the maintained fork (onedl-mmcv etc., same import names)
# on torch 2.14, requirements-onedl.txt locked in requirements-onedl.lock.
#
# The environment lives outside the clone, keyed by the hash of the lock and of this script, so
# a second run (or a CI run on the same machine) does nothing unless one of them changed:
#   ${MMVIT_EXT_ENV_ROOT:-$HOME/.cache/mmvit_ext}/env-<stack>-<hash>
# Set MMVIT_EXT_ENV to use a fixed path instead. The script only ever deletes a folder that it
# created itself (it holds the marker file .mmvit_ext_env); any other existing folder stops it.
#
# Every pip call runs with the lock as its constraints file (PIP_CONSTRAINT, which pip also
# passes on to isolated builds), so no step can install another version of anything, setuptools
# included: torch 2.13 requires setuptools>=77 and would otherwise pull the newest release,
# whose missing pkg_resources breaks the build of upstream mmcv 2.1.0.
#
# mmcv is built from its sdist with its compiled ops (about 25 minutes on 2 cores; the fork's
# with -std=c++20, which torch 2.14 requires and its setup.py does not set). A folder of
# prebuilt wheels of exactly that build is used as a cache when present: ../shared/wheelhouse
# beside the clone, or MMVIT_EXT_WHEELHOUSE (set it empty to always build).
# GPU: FORCE_CUDA=1 builds mmcv's CUDA ops (never from the CPU-only cache). Set
# TORCH_CUDA_ARCH_LIST (e.g. 9.0) to build for your GPUs only, else for every architecture
# torch supports; CUDA_HOME defaults to /usr/local/cuda; MAX_JOBS sets the build parallelism.
#
# --active: install into the environment of `python` (or $PYTHON), e.g. an activated venv or
# conda env. What is already installed at a version the toolboxes accept is kept; a missing
# package is installed at its pin, mmcv is built with its compiled ops only when it is missing,
# and a package at a version that does not fit stops the script (nothing is replaced).
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
log() { echo "[setup_env] $*" >&2; }
fail() { log "FAILED: $1"; shift; for line in "$@"; do log "  $line"; done; exit 1; }

mode=install stack=upstream
while (($#)); do
    case $1 in
        --active|--print-path|--relock) mode=${1#--} ;;
        --stack) stack=${2:-}; shift ;;
        *) fail "unknown argument $1" "usage: setup_env.sh [--active|--print-path|--relock]" \
                "[--stack upstream|onedl]" ;;
    esac
    shift
done
case $stack in
    upstream) requirements=$repo/requirements.txt lock=$repo/requirements.lock mmcv=mmcv ;;
    onedl) requirements=$repo/requirements-onedl.txt lock=$repo/requirements-onedl.lock
           mmcv=onedl-mmcv ;;
    *) fail "unknown stack '$stack'" "use --stack upstream (the default) or --stack onedl" ;;
esac
mmcv_version=$(sed -n "s/^$mmcv==//p" "$requirements")
python=${PYTHON:-python3}
wheelhouse=${MMVIT_EXT_WHEELHOUSE-$repo/../shared/wheelhouse}
check_env=("$repo/tools/check_env.py" --stack "$stack")
cuda_check=()  # the self-check also looks for mmcv's CUDA ops after a CUDA build
[[ "${FORCE_CUDA:-0}" == 1 ]] && cuda_check=(--cuda)
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
if [[ "${FORCE_CUDA:-0}" == 1 && -z "${CUDA_HOME:-}" && -x /usr/local/cuda/bin/nvcc ]]; then
    export CUDA_HOME=/usr/local/cuda
fi

# $1: a folder. Holds every later pip call (and the isolated builds it starts) to the one bound
# upstream mmcv's build needs, for installs that are not locked.
bound_setuptools() {
    "$python" "${check_env[@]}" --build-constraints >"$1/constraints.txt"
    export PIP_CONSTRAINT=$1/constraints.txt
}

# $1: the environment's python. Builds mmcv from its sdist (or takes the cached wheel) with its
# ops; --no-build-isolation, since an isolated build has no torch and silently skips them.
install_mmcv() {
    local env_python=$1 cuda=() cached=()
    local pip=("$env_python" -m pip install --progress-bar off --no-build-isolation --no-deps)
    if [[ "${FORCE_CUDA:-0}" == 1 ]]; then
        # pip's wheel cache knows the sdist, not FORCE_CUDA: it could hand back a CPU build
        cuda=(--cuda) pip+=(--no-cache-dir)
        # torch's CUDA headers include cusparse.h, which the nvidia wheels ship and a bare
        # toolkit may lack
        local includes
        includes=$("$env_python" "${check_env[@]}" --cuda-include-dirs)
        export CPATH=${includes}${CPATH:+:$CPATH}
        log "CUDA build: CUDA_HOME=${CUDA_HOME:-?}," \
            "TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-(all that torch supports)}"
    elif [[ -n "$wheelhouse" ]]; then
        cached=("$wheelhouse/${mmcv//-/_}-$mmcv_version-"*.whl)
        [[ -f "${cached[0]}" ]] || cached=()
    fi
    if ((${#cached[@]})); then
        log "$mmcv $mmcv_version with ops: the cached wheel ${cached[0]}"
        "${pip[@]}" "${cached[0]}" >&2 || fail "installing ${cached[0]} (pip's log above)."
        return
    fi
    "$env_python" "${check_env[@]}" --build-prereqs "${cuda[@]}" >&2 \
        || fail "$mmcv cannot be built here: install what the lines above name, then rerun."
    local source="$mmcv==$mmcv_version"
    if [[ $stack == onedl ]]; then  # its setup.py hard-codes -std=c++17, torch 2.14 needs 20
        source=$(mktemp -d)
        "$env_python" -m pip download --no-deps --no-binary :all: -d "$source" \
            "$mmcv==$mmcv_version" >&2 || fail "downloading the $mmcv $mmcv_version sdist."
        tar -xzf "$source"/*.tar.gz -C "$source"
        source=$(echo "$source"/*/)
        sed -i 's/-std=c++17/-std=c++20/' "$source/setup.py"
    fi
    log "$mmcv $mmcv_version with ops: building from source, MAX_JOBS=$MAX_JOBS"
    MMCV_WITH_OPS=1 FORCE_CUDA=${FORCE_CUDA:-0} "${pip[@]}" "$source" >&2 \
        || fail "building $mmcv $mmcv_version (pip's log above)." \
                "Compiler killed (out of memory): rerun with MAX_JOBS=1." \
                "CUDA errors: check CUDA_HOME and TORCH_CUDA_ARCH_LIST (see README, GPU)."
}

# $1: the environment's pip command (an array name). The package itself, editable, no deps.
install_self() {
    local -n pip_cmd=$1
    "${pip_cmd[@]}" --no-deps --no-build-isolation -e "$repo" >&2 \
        || fail "installing mmvit_ext from $repo (pip's log above)."
}

if [[ $mode == active ]]; then
    "$python" -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 needed"'
    log "installing into the environment of $("$python" -c 'import sys; print(sys.prefix)')"
    "$python" -c 'import packaging' 2>/dev/null || "$python" -m pip install -q packaging >&2
    # One line per requirement that is missing; exit 1 (with the reason) when one is installed
    # at a version that does not fit.
    missing=$("$python" "${check_env[@]}" --missing)
    # The pins of the stack's requirements for what is missing, nothing else: the lock's pins
    # would replace the versions this environment already has.
    bound_setuptools "$(mktemp -d)"
    pip=("$python" -m pip install --progress-bar off)
    others=$(grep -vx -e "$mmcv" <<<"$missing" || true)
    if [[ -n "$others" ]]; then
        mapfile -t pins < <(grep -iE "^($(paste -sd'|' <<<"$others"))(==|<|>|!|$)" \
            "$requirements")
        "${pip[@]}" "${pins[@]}" >&2 || fail "installing the missing requirements (pip's log above)."
    fi
    if grep -qx "$mmcv" <<<"$missing"; then
        "${pip[@]}" setuptools wheel ninja >&2
        install_mmcv "$python"
    fi
    install_self pip
    "$python" "${check_env[@]}" "${cuda_check[@]}" >&2
    exit 0
fi

if [[ $mode == relock ]]; then
    # uv resolves the stack's requirements for Linux x86_64 / CPython 3.11 without installing
    # them (building only sdist metadata, upstream mmcv's with setuptools<82).
    tools=$(mktemp -d)
    "$python" -m venv "$tools" && "$tools/bin/pip" install -q "uv==0.13.9" >&2
    "$python" "${check_env[@]}" --build-constraints >"$tools/build-constraints.txt"
    { echo "# Every package of the $stack stack, pinned; for Linux x86_64, CPython 3.11."
      "$tools/bin/uv" pip compile "$requirements" --python-version 3.11 \
        --python-platform x86_64-manylinux_2_28 --no-emit-package pip \
        --build-constraints "$tools/build-constraints.txt" \
        --custom-compile-command "bash tools/setup_env.sh --relock --stack $stack" \
        | sed -E 's/^torch==([^+ ]*)$/torch==\1,!=\1+cpu/'; } >"$lock.new"
    mv "$lock.new" "$lock"
    log "wrote $lock; install it (bash tools/setup_env.sh --stack $stack) and run the tests"
    exit 0
fi

key=$(cat "$lock" "$repo/tools/setup_env.sh" | sha256sum | cut -c1-12)
env_dir=${MMVIT_EXT_ENV:-${MMVIT_EXT_ENV_ROOT:-$HOME/.cache/mmvit_ext}/env-$stack-$key}
if [[ $mode == print-path ]]; then echo "$env_dir"; exit 0; fi

marker="$env_dir/.mmvit_ext_env"  # written right after the venv is created: "this is ours"
stamp="$env_dir/.mmvit_ext_installed"  # written after a complete, checked install
if [[ -f "$stamp" ]]; then
    # Already installed: only make sure this clone is the one the env imports.
    pip=("$env_dir/bin/pip" install -q)
    install_self pip
    "$env_dir/bin/python" "${check_env[@]}" >&2
    echo "$env_dir"; exit 0
fi
if [[ -e "$env_dir" && ! -f "$marker" ]]; then
    log "ERROR: $env_dir exists and was not created by this script (no $(basename "$marker")"
    log "file in it); refusing to delete or modify it."
    log "To install into that environment, activate it and run: bash tools/setup_env.sh --active"
    log "Otherwise set MMVIT_EXT_ENV to a path that does not exist yet, or remove it yourself."
    exit 1
fi

"$python" -c 'import sys; assert sys.version_info >= (3, 10), "Python >= 3.10 needed"'
if [[ -e "$env_dir" ]]; then
    log "removing the unfinished environment $env_dir (created by this script)"
    rm -rf "$env_dir"
fi
log "creating $env_dir ($stack stack)"
"$python" -m venv "$env_dir" \
    || fail "creating a virtual environment with $python." \
            "Install the venv module (e.g. apt-get install python3-venv) or set PYTHON."
touch "$marker"
pip=("$env_dir/bin/pip" install --progress-bar off)

export PIP_CONSTRAINT=$lock
log "the locked packages (torch's standard build is several GB)"
"${pip[@]}" --no-deps -r <(grep -v "^$mmcv==" "$lock") >&2 \
    || fail "installing the locked packages (pip's log above)." \
            "The lock is for Linux x86_64 with CPython 3.11; elsewhere use --active (README)."
install_mmcv "$env_dir/bin/python"
install_self pip

log "self-check"
"$env_dir/bin/pip" check >&2 || fail "the installed packages disagree (pip check above)."
"$env_dir/bin/python" "${check_env[@]}" --lock "$lock" >&2
"$env_dir/bin/python" "${check_env[@]}" "${cuda_check[@]}" >&2
touch "$stamp"
echo "$env_dir"
