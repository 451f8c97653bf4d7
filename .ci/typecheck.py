"""Run mypy on the `da` package as pyproject's package-dir lays it out, and on the tests.

mypy finds modules by folder, and our folders are mapped (`queue/` is `da.queue`, ...);
the editable install's import hook is invisible to it. So every file is handed to mypy with
its module name, read from `[tool.setuptools.package-dir]`, and mypy's own settings come from
`[tool.mypy]` as usual.

    python .ci/typecheck.py [extra mypy options]
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from mypy import build
from mypy.errors import CompileError
from mypy.main import process_options
from mypy.modulefinder import BuildSource

ROOT = Path(__file__).resolve().parent.parent


def sources() -> list[BuildSource]:
    """Every module of every mapped package, named as Python imports it."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]
    found: dict[str, BuildSource] = {}
    for package in config["packages"]:
        folder = ROOT / config["package-dir"][package]
        if not (folder / "__init__.py").exists():
            # A folder without __init__.py (queue/, so it never shadows the stdlib's queue).
            found[package] = BuildSource(None, package, text="")
        for path in sorted(folder.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = BuildSource(str(path.relative_to(ROOT)), name)
    for folder in (ROOT / "tests", ROOT / "tests" / "support"):
        # The tests are a plain package; mypy reads them under their import names, with the relaxed
        # rules of `[[tool.mypy.overrides]] module = "tests.*"`.
        package = ".".join(folder.relative_to(ROOT).parts)
        for path in sorted(folder.glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = BuildSource(str(path.relative_to(ROOT)), name)
    return list(found.values())


def main(argv: list[str]) -> int:
    _, options = process_options(["--config-file", str(ROOT / "pyproject.toml"), *argv, "-p", "da"])
    try:
        result = build.build(sources(), options)
    except CompileError as exc:
        print("\n".join(exc.messages))
        return 2
    for line in result.errors:
        print(line)
    files = len(result.files)
    print(f"mypy: {len(result.errors)} error line(s) in the da package and its tests ({files} modules read)")
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
