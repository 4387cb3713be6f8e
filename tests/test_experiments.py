"""The documented recipes in experiments/: every bundle composes, every README names a command
that composes, keeps its run folders under the recipe's runs/, and shows the committed tables
and plot that its summarize script produced. Composition and plan only (no run); planning a
valuation bundle imports pyDVL.
"""

from __future__ import annotations

import itertools
import re
import shlex
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf

from expcache.app import plan
from expcache.app.main import config_dir

ROOT = Path(__file__).resolve().parent.parent
EXPERIMENTS = ROOT / "experiments"
CONF = config_dir()
BUNDLES = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
RECIPES = sorted(p.parent.name for p in EXPERIMENTS.glob("*/README.md"))
REQUIRED = ("seed_sweep_memcached", "methods_share_utility", "stochastic_repetitions")
_STOP = {";", "&&", "||", "|", "&", ">", "2>&1", "do", "done"}

Compose = Callable[..., DictConfig]


def _plan(cfg: DictConfig) -> object:
    if "valuation" in str(cfg.task._target_):
        pytest.importorskip("pydvl", reason="planning the valuation task imports pyDVL")
    return plan(cfg)


@pytest.fixture
def compose_raw(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Compose]:
    monkeypatch.setenv("EXPCACHE_DIR", str(tmp_path / "usercache"))
    monkeypatch.delenv("EXPCACHE_SIGNING_KEY", raising=False)
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        yield lambda *overrides: compose("config", overrides=list(overrides))


def _readme(recipe: str) -> str:
    return (EXPERIMENTS / recipe / "README.md").read_text()


def _commands(text: str) -> list[list[str]]:
    """The ``expcache`` invocations of a README's bash blocks, as argument lists.

    Continuation lines are joined, ``NAME=value`` assignments of the block are substituted
    and loop variables (any other ``$name``) take the value 0, so a command reads exactly as
    the shell would run its first iteration.
    """
    found = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        block = block.replace("\\\n", " ")
        assigned = dict(re.findall(r"^([A-Z_]+)=(\S+)\s*$", block, flags=re.M))
        for line in block.splitlines():
            line = line.split(" #", 1)[0]
            if "expcache" not in line or line.lstrip().startswith("#"):
                continue
            for name, value in assigned.items():
                line = line.replace(f"${{{name}}}", value).replace(f"${name}", value)
            line = re.sub(r"\$\{?[a-z_]+\}?", "0", line)
            words = shlex.split(line)
            starts = [i for i, w in enumerate(words) if w.endswith("expcache")]
            for start in starts:
                args = []
                for w in words[start + 1 :]:
                    if w in _STOP or w.startswith((">", "2>")):
                        break
                    args.append(w)
                found.append(args)
    return found


def _expand(args: list[str]) -> list[list[str]]:
    """One override list per distinct config of the sweep (``-m`` dropped; a swept group
    such as ``method=a,b`` expanded, a swept value such as ``seed=0,1,2`` at its first)."""
    overrides = [a for a in args if a not in ("-m", "--multirun")]
    choices: list[list[str]] = []
    parsed_all = OverridesParser.create().parse_overrides(overrides)
    for raw, parsed in zip(overrides, parsed_all, strict=True):
        if parsed.is_sweep_override():
            key = parsed.key_or_group
            values = [f"{key}={v}" for v in parsed.sweep_string_iterator()]
            choices.append(values if (CONF / key).is_dir() else values[:1])
        else:
            choices.append([raw])
    return [list(combo) for combo in itertools.product(*choices)]


COMMANDS = [
    pytest.param(recipe, args, id=f"{recipe}-{k}")
    for recipe in RECIPES
    for k, args in enumerate(_commands(_readme(recipe)))
]


# -- the bundles -------------------------------------------------------------------------------
def test_the_three_recipes_have_a_readme_and_a_bundle() -> None:
    for recipe in REQUIRED:
        assert recipe in RECIPES, f"experiments/{recipe}/README.md is missing"
        assert recipe in BUNDLES, f"conf/experiment/{recipe}.yaml is missing"


@pytest.mark.parametrize("bundle", BUNDLES)
def test_every_bundle_is_global_and_composes(compose_raw: Compose, bundle: str) -> None:
    text = (CONF / "experiment" / f"{bundle}.yaml").read_text()
    assert text.startswith("# @package _global_"), f"{bundle}.yaml: first line must be the package"
    cfg = compose_raw(f"experiment={bundle}")
    assert cfg != compose_raw(), f"experiment={bundle} changes nothing"
    assert isinstance(_plan(cfg).seed, int)  # type: ignore[attr-defined]
    OmegaConf.to_container(cfg, resolve=True)


def test_the_recipe_bundles_select_what_their_readmes_describe(compose_raw: Compose) -> None:
    pytest.importorskip("pydvl", reason="planning the valuation task imports pyDVL")
    seeds = compose_raw("experiment=seed_sweep_memcached")
    p = plan(seeds)
    assert (p.backend.name, p.policy.option) == ("memcached", "deterministic")
    assert seeds.cache.strict is True and seeds.cache.namespace == "seed-sweep"
    assert seeds.method._target_.endswith("TMCShapleyValuation")
    assert (seeds.data.name, seeds.data.train_size) == ("wine", 12)

    methods = compose_raw("experiment=methods_share_utility")
    assert plan(methods).backend.name == "disk"
    assert methods.cache.namespace == "methods-share"
    assert (methods.data.name, methods.data.train_size) == ("wine", 12)
    # The sweep swaps the method only: data, model and scorer stay those of the bundle.
    for method in ("loo", "tmc_shapley", "msr_banzhaf"):
        one = compose_raw("experiment=methods_share_utility", f"method={method}")
        for group in ("data", "model", "scorer", "cache"):
            assert one[group] == methods[group], (method, group)

    noisy = compose_raw("experiment=stochastic_repetitions")
    p = plan(noisy)
    assert p.policy.option == "stochastic"
    assert p.policy.repeat is not None and p.policy.repeat.max_repetitions == 10
    assert noisy.model._target_.endswith("SGDClassifier") and "random_state" not in noisy.model
    assert noisy.method._target_.endswith("LOOValuation")


# -- the READMEs -------------------------------------------------------------------------------
@pytest.mark.parametrize("recipe", RECIPES)
def test_readme_names_its_command_and_keeps_runs_in_its_folder(recipe: str) -> None:
    text = _readme(recipe)
    commands = _commands(text)
    assert commands, f"experiments/{recipe}/README.md has no expcache command in a bash block"
    assert any(f"experiment={recipe}" in args for args in commands), "the bundle is not used"
    for args in commands:
        dirs = [
            a.split("=", 1)[1] for a in args if a.startswith(("hydra.sweep.dir=", "hydra.run.dir="))
        ]
        assert dirs, f"{shlex.join(args)}: give hydra.sweep.dir/hydra.run.dir explicitly"
        assert all(d.startswith(f"experiments/{recipe}/runs/") for d in dirs), dirs
        cache_dirs = [a.split("=", 1)[1] for a in args if a.startswith("cache.directory=")]
        assert all(d.startswith(f"experiments/{recipe}/runs/") for d in cache_dirs), cache_dirs
    assert "runs/" in (EXPERIMENTS / ".gitignore").read_text()


@pytest.mark.parametrize("recipe", RECIPES)
def test_readme_shows_the_measured_tables_and_plot(recipe: str) -> None:
    text = _readme(recipe)
    folder = EXPERIMENTS / recipe
    for heading in ("## Question", "## Commands", "## Results", "## Interpretation"):
        assert heading in text, f"{recipe}/README.md: no {heading!r} section"
    assert "2 vCPU" in text, "say on what machine the numbers were measured"
    plots = re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", text)
    assert plots, f"{recipe}/README.md embeds no PNG"
    for plot in plots:
        path = folder / plot
        assert path.is_file(), f"{recipe}/{plot} is not committed"
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size < 300_000, f"{recipe}/{plot}: keep committed plots small"
    # The README's tables are the ones summarize.py wrote (results.md), not retyped numbers.
    results = folder / "results.md"
    assert results.is_file(), f"{recipe}/results.md missing: run its summarize.py"
    rows = [line for line in results.read_text().splitlines() if line.startswith("|")]
    assert rows
    missing = [row for row in rows if row not in text]
    assert not missing, f"{recipe}/README.md differs from results.md: {missing[:3]}"


@pytest.mark.parametrize(("recipe", "args"), COMMANDS)
def test_every_readme_command_composes_for_every_job(
    compose_raw: Compose, recipe: str, args: list[str]
) -> None:
    jobs = _expand(args)
    assert 1 <= len(jobs) <= 16
    for overrides in jobs:
        # hydra.* (run dir, launcher) configure Hydra itself, not the job's config.
        cfg = compose_raw(*(o for o in overrides if not o.startswith("hydra")))
        assert isinstance(_plan(cfg).seed, int), overrides  # type: ignore[attr-defined]
