"""A function defined in a script's ``__main__`` keeps its key in spawn/forkserver workers.

Those workers import the script as ``__mp_main__``; format 2 put that module name into the
identity, so every worker missed the parent's entries and stored its own (issue 11: 4 calls,
8 evaluations). The script below is run for real: the parent and two pool workers compute the
key of the same call of a function, of a class and of a helper, all defined in ``__main__``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent(
    """
    import multiprocessing as mp
    import sys

    from expcache.keys import KeyMaker

    OFFSET = {"a": 1.5}


    def helper(x):
        return x * 2


    class Scale:
        def __init__(self, k):
            self.k = k

        def __cache_key__(self):
            return self.k

        def apply(self, x):
            return helper(x) * self.k


    def experiment(x, scale):
        return helper(x) + OFFSET["a"] + scale.apply(x)


    def key(_):
        km = KeyMaker(experiment, namespace="mp")
        return f"{km.label} {km((1.0, Scale(2.0)), {})}"


    if __name__ == "__main__":
        with mp.get_context(sys.argv[1]).Pool(2) as pool:
            workers = pool.map(key, range(2))
        print(key(None))
        for line in workers:
            print(line)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_main_module_functions_keep_their_key_in_workers(tmp_path: Path, method: str) -> None:
    script = tmp_path / "experiment.py"
    script.write_text(SCRIPT, encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    run = subprocess.run(
        [sys.executable, str(script), method],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stderr
    lines = run.stdout.split("\n")[:3]
    parent = lines[0]
    assert parent.startswith("__main__.experiment mp:ex3:")
    assert lines[1:] == [parent, parent]
