#!/usr/bin/env bash
# Creates bench/.venv-distilabel with distilabel[openai]==1.5.3, separate from the main venv so that
# distilabel's dependency pins never touch evolinstruct's environment.
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"          # bench/
venv="$here/.venv-distilabel"
python="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --upgrade pip
# Pins: see bench/README.md (distilabel 1.5.3 predates some of today's releases of its dependencies;
# it imports `requests`, which newer huggingface_hub releases no longer pull in).
"$venv/bin/python" -m pip install --quiet "distilabel[openai]==1.5.3" requests ${DISTILABEL_EXTRA_PINS:-}
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
from distilabel.steps.tasks import EvolInstruct  # noqa: F401
from distilabel.models import OpenAILLM  # noqa: F401
print("distilabel", md.version("distilabel"), "openai", md.version("openai"))
PY
