"""Blend finished training jobs into a Kaggle submission: ``python blend.py [blend=...] [data=...]``.

All logic lives in :mod:`fstag.blend_job`; see conf/ensemble.yaml and conf/blend/ for the keys.
"""

import fstag.config  # noqa: F401  (registers the fstag.abspath resolver before Hydra composes)

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fstag.blend_job import run_blend


@hydra.main(version_base="1.3", config_path="conf", config_name="ensemble")
def main(cfg: DictConfig) -> None:
    run_blend(cfg, HydraConfig.get().runtime.output_dir)


if __name__ == "__main__":
    main()
