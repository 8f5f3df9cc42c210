"""Blend finished training jobs into a Kaggle submission: ``python blend.py [blend=...] [data=...]``.

All logic lives in :mod:`fstag.ensemble.job`; see conf/ensemble.yaml and conf/blend/ for the keys.
"""

import fstag.runs.resolvers  # noqa: F401  (registers the ${fstag.*} resolvers of conf/)

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fstag.ensemble.job import run_blend


@hydra.main(version_base="1.3", config_path="conf", config_name="ensemble")
def main(cfg: DictConfig) -> None:
    run_blend(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
