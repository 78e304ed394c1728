"""Copy the collection into a real ``ansible_collections/<namespace>/<name>`` directory.

ansible-test refuses a symlinked collection directory, so ``make sanity`` tests a copy. The copy
holds what git would publish from this working tree: tracked files that still exist plus untracked
files that are not ignored, so work in progress is tested too while venvs, caches, test output and
build results never are. Outside a git checkout, a fixed exclude list is used instead. The copy is
made a git repository of its own (no commits) so that ansible-test lists its files.

Usage: python .ci/stage_collection.py DESTINATION
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Used only when the tree is not a git checkout.
EXCLUDED_TOP_LEVEL = {".git", ".collections", "build", "dist", "bench-output", "demo-output", ".cache"}
EXCLUDED_ANYWHERE = {"__pycache__", ".pytest_cache", ".ruff_cache", ".mypy_cache"}


def git_files() -> list[Path] | None:
    try:
        listing = subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            check=True,
            capture_output=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        return None

    names = sorted({name for name in listing.decode().split("\0") if name})
    return [Path(name) for name in names if (ROOT / name).is_file() or (ROOT / name).is_symlink()]


def walked_files() -> list[Path]:
    files = []
    for path in ROOT.rglob("*"):
        relative = path.relative_to(ROOT)
        top = relative.parts[0]
        if top in EXCLUDED_TOP_LEVEL or top.startswith(".venv") or EXCLUDED_ANYWHERE & set(relative.parts):
            continue
        if relative.parts[:2] == ("tests", "output"):
            continue
        if path.is_file() or path.is_symlink():
            files.append(relative)
    return files


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2

    destination = Path(sys.argv[1]).resolve()
    if destination.parts[-3:-2] != ("ansible_collections",):
        print(f"{destination} is not an ansible_collections/<namespace>/<name> path", file=sys.stderr)
        return 2
    if ROOT == destination or ROOT in destination.parents and destination.parts[len(ROOT.parts)] != "build":
        print(f"refusing to stage into {destination}: only under {ROOT / 'build'}", file=sys.stderr)
        return 2

    files = git_files()
    if files is None:
        files = walked_files()

    if destination.exists():
        shutil.rmtree(destination)

    for relative in files:
        target = destination / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, target, follow_symlinks=False)

    # ansible-test lists content with git when it finds a repository above the collection; the
    # enclosing checkout ignores build/, so the copy gets a repository of its own.
    subprocess.run(["git", "init", "--quiet", str(destination)], check=True)

    print(f"staged {len(files)} files in {destination}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
