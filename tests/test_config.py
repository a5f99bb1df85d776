"""Every YAML option of every group composes against its schema; wrong keys and values fail at compose time."""

import pytest
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, MissingMandatoryValue, ValidationError

from helpers.compose import CONF, compose_config

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
