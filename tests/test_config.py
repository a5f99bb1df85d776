"""Every YAML option of every group composes against its schema; wrong keys and values fail at compose time."""

from dataclasses import fields
from typing import get_args, get_origin

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, MissingMandatoryValue, ValidationError

from helpers.compose import CONF, compose_config
from runner import limits, schema
from runner.errors import ConfigError

GROUPS = ["mode", "input", "model", "launcher", "staging", "cluster"]
REQUIRED = {"launcher=pbs": ["launcher.queue=q", "launcher.account=a"],
            # only input=lines names the example inputs; the other formats need input.path
            **{f"input={name}": ["input.path=x"] for name in ("tsv", "jsonl", "openai_batch", "parquet")}}


def _options():
    for group in GROUPS:
        for path in sorted((CONF / group).glob("*.yaml")):
            yield f"{group}={path.stem}"


@pytest.mark.parametrize("option", list(_options()))
def test_every_option_composes_and_resolves(option):
    cfg = compose_config(option, *REQUIRED.get(option, []))
    group, name = option.split("=")
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert container[group]["name"] == name  # the option's YAML names itself (run directories use the name)
    assert container["run_name"]
    assert limits.problems(cfg) == []  # every option's own numbers are in their ranges


def test_default_is_per_tile_local_smollm2_on_cpu():
    cfg = compose_config()
    assert (cfg.mode.name, cfg.launcher.name, cfg.model.name, cfg.staging.name, cfg.cluster.name) == (
        "per_tile", "local", "smollm2_135m", "none", "local_cpu")


def test_unknown_group_option_names_the_valid_ones():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("mode=per_node")
    assert "per_tile" in str(err.value) and "server_per_node" in str(err.value)


def test_wrong_enum_value_names_the_valid_ones():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("output.format=csv")
    assert "jsonl" in str(err.value.__cause__) and "text" in str(err.value.__cause__)


def test_unknown_key_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("mode.chunksize=4")
    assert isinstance(err.value.__cause__, ConfigAttributeError) and err.value.__cause__.full_key == "mode.chunksize"


def test_wrong_type_fails_at_compose_time():
    with pytest.raises(ConfigCompositionException) as err:
        compose_config("nodes=four")
    assert isinstance(err.value.__cause__, ValidationError)


def test_pbs_without_queue_and_account_is_missing_both_values():
    cfg = compose_config("launcher=pbs")
    assert sorted(OmegaConf.missing_keys(cfg)) == ["launcher.account", "launcher.queue"]
    with pytest.raises(MissingMandatoryValue) as err:
        OmegaConf.to_container(cfg.launcher, throw_on_missing=True)
    assert err.value.full_key == "launcher.queue"
    given = compose_config("launcher=pbs", "launcher.queue=q", "launcher.account=a")
    assert not OmegaConf.missing_keys(given)


def _numeric_keys():
    """(option override, dotted key, is a list, int or float) of every number field of every schema of the
    config."""
    plain = {"": schema.RunnerConfig, "cluster.": schema.ClusterConfig, "output.": schema.OutputConfig}
    typed = [(f"{group}={name}", f"{group}.", cls) for group in schema.GROUP_BASES
             for name, cls in schema.options_of(group).items()]
    for option, prefix, cls in [("", prefix, cls) for prefix, cls in plain.items()] + typed:
        for spec in fields(cls):
            kind = get_args(spec.type)[0] if get_origin(spec.type) is list else spec.type
            if kind in (int, float):
                yield option, prefix + spec.name, get_origin(spec.type) is list, kind


@pytest.mark.parametrize("option, key, is_list, kind", list(_numeric_keys()))
def test_every_number_of_every_schema_refuses_a_negative_and_a_nan(option, key, is_list, kind):
    """A new numeric key is range-checked by being declared: -1 (and nan, for a float) is wrong for every one."""
    given = [option] if option else []
    given += REQUIRED.get(option, []) + (["input.path=x"] if option.startswith("input=") else [])
    for bad in ("-1", "nan") if kind is float else ("-1",):
        value = f"[{bad}]" if is_list else bad
        found = limits.problems(compose_config(*given, f"{key}={value}"))
        name = f"{key}[0]" if is_list else key
        assert any(problem.startswith(f"{name}=") for problem in found), (key, bad, found)


@pytest.mark.parametrize("override, problem", [
    ("mode.health_interval_s=0", "mode.health_interval_s=0.0 is out of range: give mode.health_interval_s a number > 0"),
    ("mode.port=65536", "mode.port=65536 is out of range: give mode.port a number <= 65535"),
    ("mode.concurrency=0", "mode.concurrency=0 is out of range: give mode.concurrency a number >= 1"),
    ("mode.stall_s=inf", "mode.stall_s=inf is not a finite number: give mode.stall_s a number"),
    ("cluster.engines=[4,0]", "cluster.engines[1]=0 is out of range: give cluster.engines[1] a number >= 1"),
])
def test_a_number_past_its_own_bound_is_named(override, problem):
    assert limits.problems(compose_config("mode=server_per_node", override)) == [problem]


def test_zero_where_zero_has_a_meaning_is_accepted():
    """0 means never / any port / no binding / no limit for these keys: it must stay allowed."""
    cfg = compose_config("mode=server_per_node", "mode.stall_s=0", "mode.port=0", "mode.claim_stale_after_s=0",
                         "mode.retries=0", "cluster.cores_per_socket=0", "plan_tokens_per_s=0")
    assert limits.problems(cfg) == []


def test_a_walltime_shorter_than_its_margin_is_refused_and_one_as_long_is_not():
    short = compose_config("launcher.walltime_min=1", "mode.walltime_margin_s=120")
    with pytest.raises(ConfigError) as err:
        limits.check(short)
    assert str(err.value).startswith("launcher.walltime_min=1 leaves no time to answer")
    limits.check(compose_config("launcher.walltime_min=2", "mode.walltime_margin_s=120"))
    limits.check(compose_config("launcher.walltime_min=0"))  # local: no walltime
    assert limits.problems(compose_config("launcher=pbs", *REQUIRED["launcher=pbs"], "launcher.walltime_min=0")) == [
        "launcher.walltime_min=0 is out of range: give launcher.walltime_min a number >= 1"]
