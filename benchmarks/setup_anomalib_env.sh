#!/usr/bin/env bash
# Make benchmarks/.anomalib-env: anomalib 2.7.0 from PyPI for bench_anomalib.py (not a project
# dependency). The env reuses the project's torch/torchvision instead of a second ~5 GB copy: a
# .pth file appends the project venv's site-packages AFTER the env's own, so anomalib's other
# requirements install into the env (shadowing the project's versions only inside it), and pip
# sees torch as already installed. The script refuses to finish if pip would pull another torch.
#
#   benchmarks/setup_anomalib_env.sh [PROJECT_VENV]     (default: .venv at the repository root)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
project_venv="${1:-$root/.venv}"
env_dir="$here/.anomalib-env"
anomalib_version="2.7.0"

project_python="$project_venv/bin/python"
[[ -x "$project_python" ]] || { echo "project venv not found: $project_python" >&2; exit 1; }
site="$("$project_python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
base_python="$("$project_python" -c 'import sys; print(sys._base_executable)')"

if [[ ! -x "$env_dir/bin/python" ]]; then
    "$base_python" -m venv "$env_dir"
fi
env_site="$("$env_dir/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
# "zz_" sorts last; a plain path line appends it to sys.path after the env's own site-packages.
echo "$site" > "$env_site/zz_project_venv.pth"

# Dry run first: stop if the resolver wants a torch or torchvision of its own.
report="$(mktemp)"
trap 'rm -f "$report"' EXIT
"$env_dir/bin/pip" install --quiet --dry-run --report "$report" "anomalib==$anomalib_version"
if "$env_dir/bin/python" - "$report" <<'EOF'
import json, sys
names = {i["metadata"]["name"].lower() for i in json.load(open(sys.argv[1]))["install"]}
sys.exit(0 if names & {"torch", "torchvision"} else 1)
EOF
then
    echo "pip would install another torch/torchvision for anomalib $anomalib_version; stopping" >&2
    exit 1
fi
"$env_dir/bin/pip" install --quiet "anomalib==$anomalib_version"

PYTHONWARNINGS=ignore "$env_dir/bin/python" - "$site" <<'EOF'
import sys, inspect
import torch, anomalib
from anomalib.models.image.padim.torch_model import PadimModel
assert torch.__file__.startswith(sys.argv[1]), f"torch from {torch.__file__}, expected {sys.argv[1]}"
print(f"anomalib {anomalib.__version__}, torch {torch.__version__} from {torch.__file__}")
print(f"PadimModel{inspect.signature(PadimModel.__init__)}")
EOF
echo "ready: $env_dir/bin/python"
