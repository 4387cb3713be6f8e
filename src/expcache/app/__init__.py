"""The Hydra app: everything of expcache that imports Hydra or OmegaConf.

``main`` (the console script) -> ``run`` (a pure ``run(cfg)``) -> ``build`` (``plan``: every
check before any work; ``build_context``: one probe) -> ``context`` (what a task gets). The
structured configs are derived from the constructors' signatures (``schemas``) and checked
nodes are built by ``nodes``; ``records``/``callbacks`` leave ``cache_stats.json`` and
``sweep_summary.json`` behind; ``tasks`` holds the demo and the pyDVL valuation task.

Importing this package registers the schemas in Hydra's ConfigStore and the ``expcache.*``
resolvers, once; the core (``import expcache``) never imports it.
"""

from .build import Plan, build_context, plan
from .context import CacheContext, MemoPolicy
from .records import RESULTS_FILE, STATS_FILE, SUMMARY_FILE, summarize_sweep
from .resolvers import register_resolvers
from .run import run
from .schemas import register as register_schemas

register_resolvers()
register_schemas()

__all__ = [
    "RESULTS_FILE",
    "STATS_FILE",
    "SUMMARY_FILE",
    "CacheContext",
    "MemoPolicy",
    "Plan",
    "build_context",
    "plan",
    "register_resolvers",
    "register_schemas",
    "run",
    "summarize_sweep",
]
