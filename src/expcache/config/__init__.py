"""The Hydra layer: config schemas, resolvers, the run and its records (imports Hydra).

Importing this package registers the schemas in Hydra's ConfigStore and the ``expcache.*``
resolvers, once; the core (``import expcache``) never imports it.
"""

from .build import Plan, build_context, plan
from .context import CacheContext
from .records import RESULTS_FILE, STATS_FILE, SUMMARY_FILE, summarize_sweep
from .resolvers import register_resolvers
from .runner import run
from .schema import register_schemas

register_resolvers()
register_schemas()

__all__ = [
    "RESULTS_FILE",
    "STATS_FILE",
    "SUMMARY_FILE",
    "CacheContext",
    "Plan",
    "build_context",
    "plan",
    "register_resolvers",
    "register_schemas",
    "run",
    "summarize_sweep",
]
