"""Shared fixtures: the CLI binary (for the bit-for-bit checks) and small problems."""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]


def cli_path():
    """The `scoregen` binary: $SCOREGEN_BIN, else target/release/scoregen of this checkout
    (or of $CARGO_TARGET_DIR)."""
    if os.environ.get("SCOREGEN_BIN"):
        return Path(os.environ["SCOREGEN_BIN"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release" / "scoregen"


@pytest.fixture(scope="session")
def cli():
    """Runs the CLI; skips when it has not been built (`cargo build --release -p scoregen-cli`)."""
    path = cli_path()
    if not path.exists():
        pytest.skip(f"{path} not built (cargo build --release -p scoregen-cli)")

    def run(*args):
        r = subprocess.run([str(path), "--quiet", *map(str, args)], capture_output=True, text=True)
        if r.returncode != 0:
            raise AssertionError(f"scoregen {' '.join(map(str, args))}: exit {r.returncode}: {r.stderr}")
        return r.stdout

    return run


@pytest.fixture
def mixture_problem(tmp_path):
    """A 2-D, 3-component mixture with full covariances (examples/mixture2d.json) as a
    problem file and as its parts."""
    src = ROOT / "examples" / "mixture2d.json"
    spec = json.loads(src.read_text())
    p = spec["prior"]
    return src, np.array(p["weights"]), np.array(p["means"]), np.array(p["covariances"])
