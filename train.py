"""Train one job, or sweep with -m: python train.py -m arch=resnext101_32x4d,resnet50 fold=0,1,2,3,4"""

import hydra
from omegaconf import DictConfig

import fstag.config  # noqa: F401  (registers resolvers)


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float:
    from fstag.training import run_training

    return float(run_training(cfg)["best_val_acc1"])


if __name__ == "__main__":
    main()
