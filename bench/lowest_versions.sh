#!/usr/bin/env bash
# The test suite on the oldest dependency versions pyproject.toml allows: every `name>=X` of
# [project] dependencies and of the test extra is installed as `name==X` (their own dependencies
# at the newest release that fits, as pip gives a user who stays on our floors), in a fresh
# virtualenv, .venv-lowest. Not called by .ci/run, which installs the newest releases: this run
# doubles CI time. Run it when a floor changes or a dependency is added:
#
#     bash bench/lowest_versions.sh                        # the whole suite, -n 6
#     bash bench/lowest_versions.sh tests/test_slack.py -x  # arguments go to pytest instead
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-lowest
python3 -m venv --clear "$venv"
"$venv/bin/pip" install --quiet --upgrade pip
constraints="$venv/lowest-constraints.txt"
"$venv/bin/python" - > "$constraints" <<'EOF'
import re
import sys
import tomllib

with open("pyproject.toml", "rb") as file:
    project = tomllib.load(file)["project"]
for spec in project["dependencies"] + project["optional-dependencies"]["test"]:
    requirement, _, marker = spec.partition(";")
    floor = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)(\[[^]]*\])?\s*(>=|==)\s*([^,\s]+)\s*", requirement)
    if floor is None:
        sys.exit(f"pyproject.toml: {spec!r} has no plain `>=` floor or `==` pin; give it one (the oldest version that works)")
    # A pinned tool (the linters) is installed at its pin.
    print(f"{floor[1]}=={floor[4]}" + (f"; {marker.strip()}" if marker else ""))
EOF
echo "lowest versions ($constraints):"
sed 's/^/  /' "$constraints"
"$venv/bin/pip" install --quiet --constraint "$constraints" -e '.[test]'
"$venv/bin/pip" check
if [ $# -eq 0 ]; then
    set -- -n 6
fi
exec "$venv/bin/python" -m pytest -q "$@"
