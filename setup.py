"""Packaging that pyproject.toml cannot say statically: the top-level `configs/` folder ships inside
the package as `lossheads/configs`, so an installed `lossheads-train` finds its configs anywhere
(`python train.py` in the repository reads `configs/` directly)."""

from setuptools import find_namespace_packages, setup

setup(
    packages=[*find_namespace_packages("src", include=["lossheads*", "hydra_plugins*"]), "lossheads.configs"],
    package_dir={"": "src", "lossheads.configs": "configs"},
    package_data={"lossheads.configs": ["*.yaml", "**/*.yaml"]},
)
