"""Predict with trained runs: python predict.py runs=[multirun/demo/cnn_small/none/fold_0] [input=/folder]"""

import hydra
from omegaconf import DictConfig

import fstag.runs.resolvers  # noqa: F401  (registers the ${fstag.*} resolvers of conf/)


@hydra.main(version_base="1.3", config_path="conf", config_name="predict")
def main(cfg: DictConfig) -> None:
    from fstag.infer.job import run_predict

    run_predict(cfg)


if __name__ == "__main__":
    main()
