#!/usr/bin/env bash
# Mutation testing of workflow/scripts/optbench with mutmut ([tool.mutmut] in
# pyproject.toml; README: Development). Arguments go to mutmut, e.g.
#   tools/mutation.sh run "optbench.runfiles.*"
#   tools/mutation.sh results
# mutmut names a module after its path and only strips a leading "src/", while
# the tests import optbench.*; the git-ignored link src -> workflow/scripts
# makes the two names agree. mutmut works in a copy under mutants/ (git-ignored).
set -euo pipefail
cd "$(dirname "$0")/.."
ln -sfn workflow/scripts src
exec python3 -m mutmut "$@"
