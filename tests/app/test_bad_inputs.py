"""Every bad input we could think of: rejected before any work, naming the key, no traceback.

One table, one row per bad input: misspelled keys on the command line and in YAML files,
``+key`` typos, wrong types, out-of-range values, malformed server lists and ports, signing
keys in the config and in the environment, unknown group options and targets, paths that are
files, unresolvable interpolations -- for every option of every group (a test checks that
coverage against the schemas). Each row is composed with the real conf/ (Hydra may reject it
there) and otherwise run through ``run()``, which must raise ``ConfigError`` from the plan:
no results, no cache directory. A representative subset goes through the installed
``expcache`` script (the Compose API sets no HydraConfig). Malformed sweep folders are in
test_records.py.

Rows whose check belongs to a core constructor that does not have it yet are
``xfail(strict=True)`` with the parameter; notes/app_core_requests.md lists them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from expcache import ConfigError
from expcache.app import run
from expcache.app.schemas import CACHE_SCHEMAS, POLICY_SCHEMAS, Schema, all_schemas

from .conftest import Compose
from .helpers import error_text, expcache, names_key

DEMO = "task=demo"
MC = "cache=memcached"
STOCH = "policy=stochastic"
SIGNING_SECRET = "tooshort-secret"
STOP = "pydvl.valuation.stopping.MaxUpdates"


@dataclass(frozen=True)
class Bad:
    id: str
    overrides: tuple[str, ...]
    key: str  # what the error message must name
    env: dict[str, str] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)
    core: str = ""  # the core validator this row waits for (xfail until merged)
    secret: str = ""  # must never appear in the message
    not_key: str = ""  # must not be named (the wrong key)

    @property
    def valuation(self) -> bool:
        return DEMO not in self.overrides

    def param(self) -> Any:
        marks: list[Any] = []
        if self.valuation:
            marks.append(pytest.mark.pydvl)
        if self.core:
            marks.append(
                pytest.mark.xfail(strict=True, reason=f"needs core validator: {self.core}")
            )
        return pytest.param(self, id=self.id, marks=marks)


def d(id: str, *overrides: str, key: str, **kw: Any) -> Bad:
    """A row with the demo task (no pyDVL needed)."""
    return Bad(id, (DEMO, *overrides), key, **kw)


def v(id: str, *overrides: str, key: str, **kw: Any) -> Bad:
    """A row with the valuation task (the default job)."""
    return Bad(id, overrides, key, **kw)


_TYPO_CACHE_YAML = "# @package _global_\ncache:\n  timout: 3\n"
_TYPO_MODEL_YAML = (
    "defaults:\n  - /expcache_target_schema@_here_\n  - _self_\n"
    "_target_: sklearn.linear_model.LogisticRegression\nmax_itr: 100\n"
)
_TYPO_DATA_YAML = (
    "defaults:\n  - /expcache_data_sklearn_schema@_here_\n  - _self_\nname: iris\ntrian_size: 10\n"
)
_TYPO_POLICY_YAML = (
    "defaults:\n  - /expcache_policy_deterministic_schema@_here_\n  - _self_\nleese: false\n"
)
_SEARCH = "hydra.searchpath=[file://{tmp}/conf]"

# One row per bad input, kept compact so that the table reads as a table.
# fmt: off
ROWS: list[Bad] = [
    # -- cache=disk (the default) ------------------------------------------------------------
    d("disk-typo", "cache.timout=1", key="cache.timout"),
    d("disk-plus-typo", "+cache.timout=1", key="cache.timout"),
    d("disk-directory-is-a-file", "cache.directory={tmp}/afile", key="cache.directory",
      files={"afile": "x"}),
    d("disk-directory-below-a-file", "cache.directory={tmp}/afile/cache", key="cache.directory",
      files={"afile": "x"}),
    d("disk-directory-env-is-a-file", key="EXPCACHE_DIR", env={"EXPCACHE_DIR": "{tmp}/afile"},
      files={"afile": "x"}),
    d("disk-directory-type", "cache.directory=[a]", key="cache.directory"),
    d("disk-size-limit-zero", "cache.size_limit=0", key="cache.size_limit"),
    d("disk-size-limit-type", "cache.size_limit=big", key="cache.size_limit"),
    d("disk-timeout-negative", "cache.timeout=-1", key="cache.timeout"),
    d("disk-timeout-type", "cache.timeout=soon", key="cache.timeout"),
    d("disk-max-value-size-negative", "cache.max_value_size=-1", key="cache.max_value_size"),
    d("disk-max-value-size-zero", "cache.max_value_size=0", key="cache.max_value_size"),
    d("breaker-threshold-zero", "cache.breaker_threshold=0", key="cache.breaker_threshold"),
    d("breaker-threshold-type", "cache.breaker_threshold=some", key="cache.breaker_threshold"),
    d("breaker-cooldown-negative", "cache.breaker_cooldown=-1", key="cache.breaker_cooldown"),
    d("breaker-cooldown-type", "cache.breaker_cooldown=later", key="cache.breaker_cooldown"),
    d("namespace-space", "cache.namespace='has space'", key="cache.namespace"),
    d("namespace-too-long", "cache.namespace=" + "n" * 65, key="cache.namespace"),
    d("namespace-type", "cache.namespace=[a]", key="cache.namespace"),
    d("namespace-unresolvable", "cache.namespace=${nope}", key="cache.namespace"),
    d("signing-key-too-short", f"cache.signing_key={SIGNING_SECRET}", key="cache.signing_key",
      secret=SIGNING_SECRET),
    d("signing-key-type", "cache.signing_key=[a]", key="cache.signing_key"),
    d("signing-key-env-too-short", key="EXPCACHE_SIGNING_KEY",
      env={"EXPCACHE_SIGNING_KEY": SIGNING_SECRET}, secret=SIGNING_SECRET,
      not_key="cache.signing_key"),
    d("strict-type", "cache.strict=perhaps", key="cache.strict"),
    d("cache-target-missing", "cache._target_=nope.Backend", key="cache._target_"),
    d("cache-target-not-a-backend", "cache._target_=builtins.dict", key="cache._target_"),
    d("cache-removed", "~cache", key="cache"),
    d("cache-unknown-option", "cache=memcahced", key="memcahced"),
    # -- cache=memcached ------------------------------------------------------------------------
    d("servers-typo", MC, "cache.server=[a:1]", key="cache.server"),
    d("servers-empty", MC, "cache.servers=[]", key="cache.servers"),
    d("servers-no-port", MC, "cache.servers=[localhost]", key="cache.servers"),
    d("servers-port-too-large", MC, "cache.servers=[127.0.0.1:99999]", key="cache.servers"),
    d("servers-port-zero", MC, "cache.servers=[127.0.0.1:0]", key="cache.servers"),
    d("servers-port-not-a-number", MC, "cache.servers=[127.0.0.1:abc]", key="cache.servers"),
    d("servers-second-malformed", MC, "cache.servers=[127.0.0.1:23211,localhost]",
      key="cache.servers[1]"),
    d("servers-not-a-list", MC, "cache.servers=127.0.0.1:23211", key="cache.servers"),
    d("connect-timeout-negative", MC, "cache.connect_timeout=-1", key="cache.connect_timeout"),
    d("memcached-timeout-zero", MC, "cache.timeout=0", key="cache.timeout"),
    d("memcached-timeout-type", MC, "cache.timeout=soon", key="cache.timeout"),
    d("no-delay-type", MC, "cache.no_delay=perhaps", key="cache.no_delay"),
    d("tls-type", MC, "cache.tls=perhaps", key="cache.tls"),
    d("tls-ca-file-missing", MC, "cache.tls=true", "cache.tls_ca_file={tmp}/missing.pem",
      key="cache.tls_ca_file"),
    d("tls-ca-file-is-a-directory", MC, "cache.tls=true", "cache.tls_ca_file={tmp}",
      key="cache.tls_ca_file"),
    d("tls-cert-file-not-a-certificate", MC, "cache.tls=true", "cache.tls_cert_file={tmp}/junk",
      key="cache.tls_cert_file", files={"junk": "not a certificate"}),
    d("tls-key-file-type", MC, "cache.tls_key_file=[a]", key="cache.tls_key_file"),
    d("item-size-too-small", MC, "cache.item_size=10", key="cache.item_size"),
    d("memcached-max-value-size-zero", MC, "cache.max_value_size=0", key="cache.max_value_size"),
    d("dead-timeout-negative", MC, "cache.dead_timeout=-1", key="cache.dead_timeout"),
    d("memcached-breaker-threshold-zero", MC, "cache.breaker_threshold=0",
      key="cache.breaker_threshold"),
    d("memcached-breaker-threshold-fraction", MC, "cache.breaker_threshold=1.5",
      key="cache.breaker_threshold"),
    d("memcached-breaker-cooldown-negative", MC, "cache.breaker_cooldown=-0.5",
      key="cache.breaker_cooldown"),
    d("memcached-breaker-cooldown-type", MC, "cache.breaker_cooldown=later",
      key="cache.breaker_cooldown"),
    # -- cache=memory, cache=none ----------------------------------------------------------------
    d("max-items-zero", "cache=memory", "cache.max_items=0", key="cache.max_items"),
    d("max-items-negative", "cache=memory", "cache.max_items=-1", key="cache.max_items"),
    d("max-items-type", "cache=memory", "cache.max_items=many", key="cache.max_items"),
    d("memory-breaker-threshold-negative", "cache=memory", "cache.breaker_threshold=-1",
      key="cache.breaker_threshold"),
    d("memory-breaker-threshold-type", "cache=memory", "cache.breaker_threshold=some",
      key="cache.breaker_threshold"),
    d("memory-breaker-cooldown-nan", "cache=memory", "cache.breaker_cooldown=nan",
      key="cache.breaker_cooldown"),
    d("memory-breaker-cooldown-type", "cache=memory", "cache.breaker_cooldown=[1]",
      key="cache.breaker_cooldown"),
    d("none-breaker-threshold", "cache=none", "cache.breaker_threshold=0",
      key="cache.breaker_threshold"),
    d("none-breaker-threshold-type", "cache=none", "cache.breaker_threshold=some",
      key="cache.breaker_threshold"),
    d("none-breaker-cooldown-negative", "cache=none", "cache.breaker_cooldown=-1",
      key="cache.breaker_cooldown"),
    d("none-breaker-cooldown-type", "cache=none", "cache.breaker_cooldown=later",
      key="cache.breaker_cooldown"),
    # -- policy -----------------------------------------------------------------------------------
    d("policy-typo", "policy.lease_tt=1", key="policy.lease_tt"),
    d("policy-plus-typo", "+policy.min_reps=2", key="policy.min_reps"),
    d("policy-plus-other-policys-option", "+policy.min_repetitions=2",
      key="policy.min_repetitions"),
    d("policy-stochastic-plus-lease", STOCH, "+policy.lease=false", key="policy.lease"),
    d("time-threshold-negative", "policy.time_threshold=-1", key="policy.time_threshold"),
    d("time-threshold-word", "policy.time_threshold=fast", key="policy.time_threshold"),
    d("ignore-args-type", "policy.ignore_args=5", key="policy.ignore_args"),
    # (policy.ignore_args naming a parameter the function does not have is accepted, as the
    # pyDVL 0.7 decorator accepted it: issue 13; tests/test_migration.py)
    d("version-type", "policy.version=[1]", key="policy.version"),
    d("pickle-args-type", "policy.pickle_args=perhaps", key="policy.pickle_args"),
    d("lease-type", "policy.lease=maybe", key="policy.lease"),
    d("lease-ttl-zero", "policy.lease_ttl=0", key="policy.lease_ttl"),
    d("lease-max-wait-zero", "policy.lease_max_wait=0", key="policy.lease_max_wait"),
    d("expire-negative", "policy.expire=-1", key="policy.expire"),
    d("min-repetitions-zero", STOCH, "policy.min_repetitions=0", key="policy.min_repetitions"),
    d("min-repetitions-type", STOCH, "policy.min_repetitions=abc", key="policy.min_repetitions"),
    d("rtol-stderr-negative", STOCH, "policy.rtol_stderr=-0.5", key="policy.rtol_stderr"),
    d("atol-stderr-negative", STOCH, "policy.atol_stderr=-1", key="policy.atol_stderr"),
    d("max-repetitions-below-min", STOCH, "policy.max_repetitions=2",
      key="policy.max_repetitions"),
    d("max-cas-retries-zero", STOCH, "policy.max_cas_retries=0", key="policy.max_cas_retries"),
    d("stochastic-expire-type", STOCH, "policy.expire=later", key="policy.expire"),
    d("policy-unknown-option", "policy=stochastik", key="stochastik"),
    # -- the top level ----------------------------------------------------------------------------
    d("seed-negative", "seed=-1", key="seed"),
    d("seed-type", "seed=abc", key="seed"),
    d("top-level-plus-typo", "+sed=1", key="sed"),
    d("experiment-unknown", "experiment=nope", key="nope"),
    # -- YAML files with typos (a user's own config folder) --------------------------------------
    d("yaml-typo-in-a-bundle", _SEARCH, "experiment=typo", key="cache.timout",
      files={"conf/experiment/typo.yaml": _TYPO_CACHE_YAML}),
    d("yaml-typo-in-a-policy", _SEARCH, "policy=typo", key="policy.leese",
      files={"conf/policy/typo.yaml": _TYPO_POLICY_YAML}),
    v("yaml-typo-in-a-data-option", _SEARCH, "data=typo", key="data.trian_size",
      files={"conf/data/typo.yaml": _TYPO_DATA_YAML}),
    v("yaml-typo-in-a-model-option", _SEARCH, "model=typo", key="model.max_itr",
      files={"conf/model/typo.yaml": _TYPO_MODEL_YAML}),
    # -- task=demo ----------------------------------------------------------------------------------
    d("demo-typo", "task.n_point=1", key="task.n_point"),
    d("demo-plus-typo", "+task.n_point=1", key="task.n_point"),
    d("demo-n-points", "task.n_points=1", key="task.n_points"),
    d("demo-n-points-type", "task.n_points=many", key="task.n_points"),
    d("demo-n-features", "task.n_features=0", key="task.n_features"),
    d("demo-subset-size", "task.subset_size=500", key="task.subset_size"),
    d("demo-n-subsets", "task.n_subsets=0", key="task.n_subsets"),
    d("demo-shared-fraction", "task.shared_fraction=1.5", key="task.shared_fraction"),
    d("demo-n-iter", "task.n_iter=-1", key="task.n_iter"),
    d("demo-noise", "task.noise=-0.1", key="task.noise"),
    d("demo-data-seed", "task.data_seed=-1", key="task.data_seed"),
    d("task-unknown-option", "task=dmeo", key="dmeo"),
    d("task-target-blocked", "task._target_=os.system", key="task._target_"),
    d("task-target-missing", "task._target_=nope.Task", key="task._target_"),
    # -- task=valuation ---------------------------------------------------------------------------
    v("top-k-negative", "task.top_k=-1", key="task.top_k"),
    v("top-k-zero", "task.top_k=0", key="task.top_k"),
    v("top-k-typo", "task.top_kk=1", key="task.top_kk"),
    v("top-k-plus-typo", "+task.top_kk=1", key="task.top_kk"),
    v("name-empty", "task.name=''", key="task.name"),
    v("plot-type", "task.plot=maybe", key="task.plot"),
    v("progress-type", "task.progress=maybe", key="task.progress"),
    v("stats-channel", "task.stats_channel=carrier-pigeon", key="task.stats_channel"),
    v("max-failed-fraction", "task.max_failed_fraction=1.5", key="task.max_failed_fraction"),
    v("max-failed-fraction-type", "task.max_failed_fraction=lots",
      key="task.max_failed_fraction"),
    v("check-model-type", "task.check_model=maybe", key="task.check_model"),
    v("verbose-type", "task.verbose=maybe", key="task.verbose"),
    v("objective-syntax", "task.objective='values..mean'", key="task.objective"),
    v("objective-unknown-key", "task.objective=valeus.mean", key="task.objective"),
    v("utility-plus-typo", "+task.utility.catch_erors=true", key="task.utility.catch_erors"),
    v("utility-catch-errors-type", "task.utility.catch_errors=perhaps",
      key="task.utility.catch_errors"),
    v("utility-show-warnings-type", "task.utility.show_warnings=perhaps",
      key="task.utility.show_warnings"),
    v("utility-clone-type", "task.utility.clone_before_fit=perhaps",
      key="task.utility.clone_before_fit"),
    v("utility-live-object-in-config", "task.utility.model=x", key="task.utility.model"),
    v("utility-target-missing", "task.utility._target_=nope.utility", key="task.utility._target_"),
    v("task-data-not-a-node", "task.data=5", key="task.data"),
    v("task-model-not-a-node", "task.model=5", key="task.model"),
    v("task-scorer-not-a-node", "task.scorer=5", key="task.scorer"),
    v("task-method-not-a-node", "task.method=5", key="task.method"),
    v("task-parallel-not-a-node", "task.parallel=5", key="task.parallel"),
    # -- data ------------------------------------------------------------------------------------------
    v("data-typo", "data.trian_size=10", key="data.trian_size"),
    v("data-plus-typo", "+data.trian_size=10", key="data.trian_size"),
    v("data-name", "data.name=nope", key="data.name"),
    v("data-name-missing", "data.name=???", key="data.name"),
    v("data-train-size-zero", "data.train_size=0", key="data.train_size"),
    v("data-train-size-fractional-count", "data.train_size=1.5", key="data.train_size"),
    v("data-train-size-type", "data.train_size=half", key="data.train_size"),
    v("data-test-size-negative", "data.test_size=-1", key="data.test_size"),
    v("data-split-seed-negative", "data.split_seed=-1", key="data.split_seed"),
    v("data-max-points-too-small", "data.max_points=2", key="data.max_points"),
    v("data-stratify-type", "data.stratify=perhaps", key="data.stratify"),
    v("data-standardize-type", "data.standardize=perhaps", key="data.standardize"),
    v("data-label-noise-too-large", "data.label_noise=1.5", key="data.label_noise"),
    v("data-label-noise-one", "data.label_noise=1", key="data.label_noise"),
    v("data-unknown-option", "data=iriss", key="iriss"),
    v("synthetic-n-samples", "data=synthetic", "data.n_samples=0", key="data.n_samples"),
    v("synthetic-n-features", "data=synthetic", "data.n_features=0", key="data.n_features"),
    v("synthetic-n-informative", "data=synthetic", "data.n_informative=0",
      key="data.n_informative"),
    v("synthetic-n-redundant", "data=synthetic", "data.n_redundant=-1", key="data.n_redundant"),
    v("synthetic-n-classes", "data=synthetic", "data.n_classes=1", key="data.n_classes"),
    v("synthetic-class-sep", "data=synthetic", "data.class_sep=0", key="data.class_sep"),
    v("synthetic-flip-y", "data=synthetic", "data.flip_y=2", key="data.flip_y"),
    v("synthetic-seed", "data=synthetic", "data.seed=-1", key="data.seed"),
    v("synthetic-train-size", "data=synthetic", "data.train_size=0", key="data.train_size"),
    v("synthetic-typo", "data=synthetic", "data.n_sample=3", key="data.n_sample"),
    # -- model (a scikit-learn estimator: its signature and its own constraints) ------------------
    v("model-c-negative", "model.C=-1", key="model.C"),
    v("model-c-type", "model.C=abc", key="model.C"),
    v("model-typo", "model.CC=1", key="model.CC"),
    v("model-solver", "model.solver=magic", key="model.solver"),
    v("model-max-iter", "model.max_iter=-1", key="model.max_iter"),
    v("model-random-state", "model.random_state=abc", key="model.random_state"),
    v("knn-n-neighbors", "model=knn", "model.n_neighbors=0", key="model.n_neighbors"),
    v("knn-weights", "model=knn", "model.weights=heavy", key="model.weights"),
    v("tree-max-depth", "model=decision_tree", "model.max_depth=0", key="model.max_depth"),
    v("sgd-loss", "model=sgd", "model.loss=nope", key="model.loss"),
    v("model-unknown-option", "model=svm", key="svm"),
    v("model-target-missing", "model._target_=sklearn.nope.Model", key="model._target_"),
    # -- scorer ------------------------------------------------------------------------------------
    v("scoring-name", "scorer.scoring=nonsense", key="scorer.scoring"),
    v("scoring-missing", "scorer.scoring=???", key="scorer.scoring"),
    v("scorer-range-reversed", "scorer.range=[1,0]", key="scorer.range"),
    v("scorer-range-one-number", "scorer.range=[0]", key="scorer.range"),
    v("scorer-default-type", "scorer.default=abc", key="scorer.default"),
    v("scorer-typo", "scorer.scorring=x", key="scorer.scorring"),
    v("scorer-unknown-option", "scorer=auc", key="auc"),
    # -- method (a pyDVL class: its signature, pyDVL's own checks, the rules pyDVL lacks) ----------
    v("truncation-rtol-type", "method.truncation.rtol=abc", key="method.truncation.rtol"),
    v("truncation-typo", "method.truncation.rtl=0.1", key="method.truncation.rtl"),
    v("truncation-burn-in", "method.truncation.burn_in_fraction=3", key="method.truncation"),
    v("is-done-zero", "method.is_done.n_updates=0", key="method.is_done"),
    v("is-done-type", "method.is_done.n_updates=many", key="method.is_done.n_updates"),
    v("is-done-typo", "method.is_done.n_update=3", key="method.is_done.n_update"),
    v("is-done-target-missing", "method.is_done._target_=nope.Stop",
      key="method.is_done._target_"),
    v("is-done-not-a-node", "method.is_done=5", key="method.is_done"),
    v("method-target-missing", "method._target_=nope.Method", key="method._target_"),
    v("method-seed-type", "method.seed=abc", key="method.seed"),
    v("method-seed-negative", "method.seed=-1", key="method.seed"),
    v("method-show-warnings-type", "method.show_warnings=perhaps", key="method.show_warnings"),
    v("method-skip-converged-type", "method.skip_converged=perhaps",
      key="method.skip_converged"),
    v("method-typo", "method.seeed=1", key="method.seeed"),
    v("method-live-object-in-config", "method.utility=x", key="method.utility"),
    v("msr-batch-size-zero", "method=msr_banzhaf", "method.batch_size=0", key="method.batch_size"),
    v("msr-batch-size-type", "method=msr_banzhaf", "method.batch_size=x", key="method.batch_size"),
    v("loo-has-no-is-done", "method=loo", f"+method.is_done={{_target_:{STOP},n_updates:3}}",
      key="method.is_done"),
    v("method-unknown-option", "method=shapley", key="shapley"),
    # -- parallel ------------------------------------------------------------------------------------
    v("n-jobs-zero", "parallel.n_jobs=0", key="parallel.n_jobs"),
    v("n-jobs-below-minus-one", "parallel.n_jobs=-2", key="parallel.n_jobs"),
    v("n-jobs-type", "parallel.n_jobs=two", key="parallel.n_jobs"),
    v("joblib-backend", "parallel.backend=dask", key="parallel.backend"),
    v("blas-threads-zero", "parallel.blas_threads=0", key="parallel.blas_threads"),
    v("ray-address-without-ray", "parallel.address=127.0.0.1:6379", key="parallel.address"),
    v("ray-address-malformed", "parallel=ray", "parallel.address=http://head:6379",
      key="parallel.address"),
    v("parallel-typo", "parallel.njobs=2", key="parallel.njobs"),
    v("parallel-unknown-option", "parallel=dask", key="dask"),
]
# fmt: on

_HYDRA_ERRORS = (HydraException, OmegaConfBaseException)


def _chain(exc: BaseException) -> str:
    parts = []
    while exc is not None:
        parts.append(str(exc))
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    return "\n".join(parts)


def _prepare(row: Bad, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    if row.valuation:
        pytest.importorskip("pydvl", reason="planning the valuation task imports pyDVL")
    for rel, content in row.files.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    for name, value in row.env.items():
        monkeypatch.setenv(name, value.replace("{tmp}", str(tmp_path)))
    return [o.replace("{tmp}", str(tmp_path)) for o in row.overrides]


def _check_message(row: Bad, text: str) -> None:
    assert names_key(text, row.key), f"{row.key!r} not named in: {text}"
    assert "Traceback" not in text
    if row.secret:
        assert row.secret not in text
    if row.not_key:
        assert row.not_key not in text


@pytest.mark.parametrize("row", [r.param() for r in ROWS])
def test_every_bad_input_is_rejected_before_any_work(
    row: Bad,
    compose_raw: Compose,
    tmp_path: Path,
    cache_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    overrides = _prepare(row, tmp_path, monkeypatch)
    out = tmp_path / "job"
    try:
        cfg = compose_raw(*overrides)
    except _HYDRA_ERRORS as exc:  # Hydra's schema check, while composing
        _check_message(row, _chain(exc))
        return
    with pytest.raises(ConfigError) as info:
        run(cfg, output_dir=out)
    _check_message(row, str(info.value))
    assert not (out / "results.json").exists()  # the task never ran
    assert not cache_dir.exists()  # no store was opened
    assert (out / "cache_stats.json").is_file()  # ... but the failure is on record


# -- through the console script -----------------------------------------------------------------
CLI_ROWS = [
    "disk-typo",
    "disk-plus-typo",
    "disk-timeout-negative",
    "max-items-zero",
    "servers-empty",
    "signing-key-env-too-short",
    "policy-plus-typo",
    "top-level-plus-typo",
    "cache-unknown-option",
    "yaml-typo-in-a-bundle",
    "top-k-negative",
    "utility-plus-typo",
    "truncation-rtol-type",
    "model-c-negative",
]
_BY_ID = {r.id: r for r in ROWS}


@pytest.mark.slow
@pytest.mark.parametrize("row", [_BY_ID[i].param() for i in CLI_ROWS])
def test_the_console_script_rejects_them_in_one_line(
    row: Bad, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = _prepare(row, tmp_path, monkeypatch)
    env = {k: val.replace("{tmp}", str(tmp_path)) for k, val in row.env.items()}
    proc = expcache(f"hydra.run.dir={tmp_path / 'run'}", *overrides, cwd=tmp_path, env=env)
    assert proc.returncode != 0, proc.stdout
    _check_message(row, error_text(proc.stderr))
    assert not (tmp_path / "run" / "results.json").exists()
    assert not (tmp_path / "usercache").exists()


@pytest.mark.slow
def test_a_run_folder_that_is_a_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    proc = expcache(DEMO, f"hydra.run.dir={tmp_path / 'afile' / 'run'}", cwd=tmp_path)
    assert proc.returncode != 0
    assert "hydra.run.dir=" in proc.stderr and "is a file" in proc.stderr
    assert "Traceback" not in proc.stderr
    sweep = expcache("-m", DEMO, "seed=0,1", f"hydra.sweep.dir={tmp_path / 'afile'}", cwd=tmp_path)
    assert sweep.returncode != 0
    assert "hydra.sweep.dir=" in sweep.stderr and "Traceback" not in sweep.stderr


# -- empty signing keys mean "unset" ----------------------------------------------------------------
def test_an_empty_signing_key_in_the_environment_runs_unsigned(
    cfg_of: Compose, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EXPCACHE_SIGNING_KEY", "")
    result = run(cfg_of("cache=memory", "task.n_subsets=2"), output_dir=tmp_path)
    assert result["cache_stats"]["signed"] is False
    assert result["cache_stats"]["total"]["calls"] == 2


def test_an_empty_signing_key_in_the_config_runs_unsigned(cfg_of: Compose, tmp_path: Path) -> None:
    result = run(cfg_of("cache=memory", "cache.signing_key=''"), output_dir=tmp_path)
    assert result["cache_stats"]["signed"] is False


@pytest.mark.slow
def test_the_console_script_runs_with_an_empty_signing_key(tmp_path: Path) -> None:
    proc = expcache(
        DEMO,
        "task.n_subsets=2",
        f"hydra.run.dir={tmp_path / 'run'}",
        cwd=tmp_path,
        env={"EXPCACHE_SIGNING_KEY": ""},
    )
    assert proc.returncode == 0, proc.stderr
    assert '"signed": false' in (tmp_path / "run" / "cache_stats.json").read_text()


# -- the table covers every option of every group ----------------------------------------------------
def _schema_for(row: Bad, section: str) -> Schema | None:
    chosen = dict(o.split("=", 1) for o in row.overrides if "=" in o and "." not in o.split("=")[0])
    schemas = {(s.group, s.key): s for s in all_schemas()}
    if section == "cache":
        return CACHE_SCHEMAS.get(chosen.get("cache", "disk"))
    if section == "policy":
        return POLICY_SCHEMAS.get(chosen.get("policy", "deterministic"))
    if section == "task":
        return schemas.get(("task", "demo" if not row.valuation else "valuation"))
    if section == "data":
        option = "synthetic" if chosen.get("data") == "synthetic" else "sklearn"
        return schemas.get(("data", option))
    return {
        "scorer": schemas.get(("scorer", "supervised")),
        "parallel": schemas.get(("parallel", "joblib")),
    }.get(section)


def test_the_table_covers_every_option_of_every_group() -> None:
    """At least one row per validator: per option, per constructor that defines it (the
    ``breaker_*`` of ``Backend`` once for every backend, ``timeout`` once per backend)."""
    covered = set()
    for row in ROWS:
        section, _, rest = row.key.partition(".")
        name = rest.split(".", 1)[0]
        schema = _schema_for(row, section)
        if schema is None:
            continue
        for option in schema.options:
            if option.name == name:
                covered.add((schema.group, option.name, option.owner))
    missing = sorted(
        f"{s.group}.{o.name} ({o.owner})"
        for s in all_schemas()
        for o in s.options
        if (s.group, o.name, o.owner) not in covered
    )
    assert not missing, f"no bad-input row for: {missing}"
