#!/usr/bin/env bash
# Gradescope runs this once, as root, on its Ubuntu image (22.04, Python 3.10) when it
# builds the autograder. Written by `llmgrade gradescope build`: change its options there.
# Installs exactly what grading needs: Python with venv, torch (@TORCH_REQUIREMENT@ from
# @TORCH_INDEX@), then this course's package with the dependencies its pyproject.toml declares.
set -euo pipefail
ROOT="${AUTOGRADER_ROOT:-/autograder}"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
if [ -f "$HERE/pyproject.toml" ]; then SOURCE="$HERE"; else SOURCE="$ROOT/source"; fi
VENV="$ROOT/llmgrade-venv"

export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends python3 python3-venv python3-pip
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --no-cache-dir --upgrade pip
"$VENV/bin/python" -m pip install -q --no-cache-dir --index-url "@TORCH_INDEX@" "@TORCH_REQUIREMENT@"
"$VENV/bin/python" -m pip install -q --no-cache-dir "$SOURCE"
# Isolation (README, "Isolation"): workers run as uids of their own, which must read the Python
# runtime and the grader (the venv) but not the course: run_autograder's grading takes "other"
# permissions off the course tree itself; here the runtime's folders are made readable.
chmod o+x "$ROOT"
chmod -R o+rX "$VENV"
# The grader starts and finds its stages, or the image build fails here rather than at grading;
# doctor prints the isolation layers this image gives (Docker: uid + seccomp + rlimits, no namespaces).
cd "$SOURCE"
LLMGRADE_ROOT="$SOURCE" "$VENV/bin/python" -m grader grade --help > /dev/null
LLMGRADE_ROOT="$SOURCE" "$VENV/bin/python" -m grader doctor || true
