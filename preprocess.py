"""Compute the feature cache: python preprocess.py [data=demo|fsdkaggle2018] [data.root=/path] [features.*=...]"""

import sys

import hydra
from omegaconf import DictConfig

import fstag.runs.resolvers  # noqa: F401  (registers the ${fstag.*} resolvers of conf/)


@hydra.main(version_base="1.3", config_path="conf", config_name="preprocess")
def main(cfg: DictConfig) -> None:
    from fstag.data.layouts import DatasetError
    from fstag.data.job import run_from_config

    try:
        run_from_config(cfg)
    except DatasetError as exc:
        print(f"preprocess.py: error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
