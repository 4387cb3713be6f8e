"""Integrations of expcache with experiment libraries (optional extras).

Nothing here is imported by ``import expcache``: ``expcache.integrations.pydvl`` imports pyDVL
and scikit-learn, ``expcache.integrations.task`` is the Hydra task of the valuation runner.
The pieces that need neither (``ledger``, ``schema``) import only the core and Hydra.
"""
