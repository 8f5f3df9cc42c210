"""Train one job, or sweep with -m: python train.py -m arch=resnext101_32x4d,resnet50 fold=0,1,2,3,4

Returns ``optimized_metric`` (default val_map3) of the best checkpoint, so sweepers such as
``hparams_search=demo_optuna`` (Optuna) can optimise it.
"""

import hydra
from omegaconf import DictConfig

import fstag.runs.resolvers  # noqa: F401  (registers the ${fstag.*} resolvers of conf/)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from fstag.train.job import optimized_value, run_training

    return optimized_value(run_training(cfg), str(cfg.optimized_metric))


if __name__ == "__main__":
    main()
