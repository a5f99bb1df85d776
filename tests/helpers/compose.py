"""The job config as `python -m runner` composes it, in this process (no run): for tests of what a config says."""

from pathlib import Path

from hydra import compose, initialize_config_dir

from runner.schema import register_configs

CONF = Path(__file__).resolve().parents[2] / "conf"


def compose_config(*overrides: str):
    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))
