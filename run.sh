#!/usr/bin/env bash
# One entry point for a fresh machine: sets up .venv on first use, then runs the command.
#   bash run.sh demo   train the digits model and evaluate the samplers (table + plot under runs/digits)
#   bash run.sh test   the default test suite (python -m pytest; add -m slow for the long ones)
set -euo pipefail
cd "$(dirname "$0")"
VENV="${VENV:-.venv}"
if [ ! -x "$VENV/bin/python" ] || ! "$VENV/bin/python" -c "import framework, torch, lightning" 2>/dev/null; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q --upgrade pip >/dev/null 2>&1 || true
    # torch first and pinned: a looser requirement would pull a multi-GB CUDA build
    "$VENV/bin/pip" install -q torch==2.13.0
    "$VENV/bin/pip" install -q -e ".[test]"
fi
export HF_DATASETS_OFFLINE=1 HF_HUB_OFFLINE=1
cmd="${1:-}"
shift || true
case "$cmd" in
    demo) exec "$VENV/bin/python" train.py configs/digits.yaml "$@" ;;
    test) exec "$VENV/bin/python" -m pytest -q "$@" ;;
    *) echo "usage: bash run.sh demo|test [extra args]" >&2; exit 2 ;;
esac
