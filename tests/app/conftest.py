"""Fixtures of the app tests: the real conf/ composed through the Compose API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

import expcache.app  # noqa: F401  # registers the schemas and resolvers

from .helpers import CONF

Compose = Callable[..., DictConfig]


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The per-user cache directory, redirected into the test's tmp folder; no signing key."""
    path = tmp_path / "usercache"
    monkeypatch.setenv("EXPCACHE_DIR", str(path))
    monkeypatch.delenv("EXPCACHE_SIGNING_KEY", raising=False)
    return path


@pytest.fixture
def compose_raw(cache_dir: Path) -> Iterator[Compose]:
    """The real conf/ composed with exactly these overrides."""
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield lambda *overrides: compose("config", overrides=list(overrides))


@pytest.fixture
def cfg_of(compose_raw: Compose) -> Compose:
    """Composed with the demo task, whatever the default task is (no pyDVL needed)."""
    return lambda *overrides: compose_raw("task=demo", *overrides)


@pytest.fixture
def need_pydvl() -> None:
    pytest.importorskip("pydvl", reason="needs the pydvl extra: pip install -e '.[pydvl]'")
