"""python train.py [overrides]: train and test one configuration (or a sweep with -m)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from lossheads.train import main as run_main

    return run_main(cfg)  # the optimized metric, for sweepers such as Optuna


if __name__ == "__main__":
    main()
