"""python train.py [overrides]: train and test one configuration (or a sweep with -m); `--help` lists
the config groups. Installed, the same command is `lossheads-train`."""

from lossheads.cli.entry import train

if __name__ == "__main__":
    train()
