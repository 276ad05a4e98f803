#!/usr/bin/env python3
"""Set up mfa in ./.venv and run the demo or the tests: the two commands of the README.

    python3 dev.py demo   # set up, then run pipelines/dk-sample.toml → outputs/dk-sample/latest/
    python3 dev.py test   # set up, then ruff + the whole pytest suite

Set-up (only when requirements.lock or pyproject.toml changed since the last one):
a virtual environment in .venv, uv inside it, then the locked dependencies and mfa itself
(editable). Needs only Python >= 3.11 and access to PyPI.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PY = BIN / ("python.exe" if os.name == "nt" else "python")
STAMP = VENV / ".mfa-setup"


def sh(*cmd: str | Path, env: dict[str, str] | None = None) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    done = subprocess.run([str(c) for c in cmd], cwd=ROOT, env=env)
    if done.returncode != 0:
        sys.exit(done.returncode)


def setup() -> None:
    if sys.version_info < (3, 11):  # noqa: UP036 - dev.py runs under any python3
        sys.exit(f"mfa needs Python >= 3.11, this is {sys.version.split()[0]}")
    digest = hashlib.sha256(
        b"setup 2: bytecode"
        + (ROOT / "requirements.lock").read_bytes()
        + (ROOT / "pyproject.toml").read_bytes()
    ).hexdigest()
    if PY.exists() and STAMP.exists() and STAMP.read_text() == digest:
        return
    if not PY.exists():
        print(f"+ creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    sh(PY, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "uv>=0.4")
    sh(
        PY,
        "-m",
        "uv",
        "pip",
        "install",
        "--quiet",
        # precompiled modules: this environment may set PYTHONDONTWRITEBYTECODE, and then
        # every command would compile the geo stack from source again (~10 s)
        "--compile-bytecode",
        "--python",
        PY,
        "-r",
        "requirements.lock",
        "-e",
        ".[dev,bench]",
    )
    STAMP.write_text(digest)


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{BIN}{os.pathsep}{e.get('PATH', '')}"
    return e


def main() -> None:
    what = sys.argv[1] if len(sys.argv) > 1 else ""
    rest = sys.argv[2:]
    if what not in {"demo", "test", "setup"}:
        sys.exit(__doc__)
    setup()
    if what == "demo":
        sh(BIN / "mfa", "run", "pipelines/dk-sample.toml", *rest, env=env())
    elif what == "test":
        sh(PY, "-m", "ruff", "check", ".", env=env())
        sh(PY, "-m", "ruff", "format", "--check", ".", env=env())
        sh(PY, "-m", "pytest", *rest, env=env())


if __name__ == "__main__":
    main()
