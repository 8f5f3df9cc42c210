"""Blend finished training jobs into a Kaggle submission: ``python blend.py [blend=...] [data=...]``.

All logic lives in :mod:`fstag.ensemble.job`; see conf/ensemble.yaml and conf/blend/ for the keys.
``blend.register=<name>`` then packages the finished blend as a registered MLflow model
(:func:`fstag.serve.job.register_blend`; docs/serving.md).
"""

import fstag.runs.resolvers  # noqa: F401  (registers the ${fstag.*} resolvers of conf/)

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from fstag.ensemble.job import run_blend


@hydra.main(version_base="1.3", config_path="conf", config_name="ensemble")
def main(cfg: DictConfig) -> None:
    output_dir = HydraConfig.get().runtime.output_dir
    run_blend(cfg, output_dir)
    if cfg.blend.get("register"):
        from fstag.serve.job import register_blend

        register_blend(cfg, output_dir)


if __name__ == "__main__":
    main()
