"""The command line `python train.py` and the installed `lossheads-train`.

Hydra composes the config; this adds the project's own `--help` (config groups, options and top-level
keys, read from the configs themselves) and turns a mistyped override, which Hydra reports as a
composition error, into one line with the nearest valid name and exit code 2.
"""

from __future__ import annotations

import os
import sys

from lossheads.cli.help import composition_error, config_dir, help_page

EXIT_BAD_INPUT = 2


def train() -> None:
    """Entry point of `python train.py` and `lossheads-train`."""
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(help_page(config_dir()))
        return
    import hydra
    from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException

    from lossheads.run.execute import main as run_main

    # Hydra prints a composition error as a paragraph and exits 1; with this it raises it to us instead
    os.environ.setdefault("HYDRA_FULL_ERROR", "1")
    entry = hydra.main(version_base="1.3", config_path=str(config_dir()), config_name="train")(run_main)
    try:
        entry()
    except (MissingConfigException, ConfigCompositionException, OverrideParseException) as exc:
        print(f"error: {composition_error(exc)}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
