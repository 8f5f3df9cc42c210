"""Package trained runs as one MLflow model (no blend needed):
``python -m fstag.export "runs=[...]" [register=<name>] [format=torch|onnx] [serve.<key>=...]``, or a blend made
earlier: ``python -m fstag.export from_blend=<blend output folder> register=<name>``.

All logic lives in :func:`fstag.serve.job.run_export`; conf/export.yaml lists the keys, docs/serving.md the rest.
"""

import hydra
from omegaconf import DictConfig

import fstag.runs.resolvers  # noqa: F401  (registers the ${fstag.*} resolvers of conf/)
from fstag.core.config import CONFIG_DIR


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="export")
def main(cfg: DictConfig) -> None:
    from fstag.serve.job import run_export

    run_export(cfg)


if __name__ == "__main__":
    main()
