"""Integrations of expcache with experiment libraries (optional extras), without Hydra.

``expcache.integrations.pydvl`` (imports pyDVL and scikit-learn) makes any pyDVL utility use
an expcache backend; ``import expcache`` never imports it. The Hydra task that runs pyDVL
valuations from YAML lives in ``expcache.app.tasks.valuation``.
"""
