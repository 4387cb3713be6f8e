"""The core and the pyDVL integration import without Hydra or OmegaConf.

A subprocess installs a meta-path finder that refuses ``hydra``, ``omegaconf`` and
``hydra_zen`` (as if they were not installed), imports the core modules, and checks that
nothing Hydra-like was loaded. The app (``expcache.app``) is the only place allowed to import
them.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

_BLOCK = textwrap.dedent(
    """
    import importlib.abc, sys

    class Refuse(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("hydra", "omegaconf", "hydra_zen"):
                raise ImportError(f"{name} is blocked in this test")
            return None

    sys.meta_path.insert(0, Refuse())
    """
)


def _run(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", _BLOCK + textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_block_works() -> None:
    proc = _run("import expcache.app")
    assert proc.returncode != 0
    assert "hydra is blocked" in proc.stderr or "omegaconf is blocked" in proc.stderr


def test_the_core_imports_without_hydra() -> None:
    proc = _run(
        """
        import expcache, expcache.backends, expcache.ledger, expcache.integrations
        from expcache import DiskBackend, Memoized, memoize
        from expcache.ledger import RunLedger

        @memoize(backend=expcache.MemoryBackend())
        def f(x):
            return x + 1

        assert f(1) == 2 and f(1) == 2 and f.stats.hits == 1
        RunLedger(expcache.MemoryBackend()).close()
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("hydra", "omegaconf"))
        assert not loaded, loaded
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"


@pytest.mark.pydvl
def test_the_pydvl_integration_imports_without_hydra() -> None:
    pytest.importorskip("pydvl")
    proc = _run(
        """
        import warnings
        warnings.simplefilter("ignore")
        import expcache.integrations.pydvl as integration
        assert callable(integration.cached_utility)
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("hydra", "omegaconf"))
        assert not loaded, loaded
        print("ok")
        """
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "ok"
