"""`lossheads-predict ckpt_path=RUN data.path=FILE_OR_DIR [output=predictions.csv]` (in the repository
also `python predict.py ...`): the arguments, the help page and the exit codes; the scoring itself is
`lossheads.evaluation.predict`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from omegaconf import OmegaConf

from lossheads.config.validators import EXIT_BAD_INPUT, ConfigError, require
from lossheads.evaluation.predict import USAGE, image_inputs, load_run, predict, table_inputs, write_predictions
from lossheads.run.folder import enclosing_run

HELP = f"""usage: {USAGE}
       (in the repository: python predict.py ...)

Scores a table (CSV, Parquet, .npz with the training file's columns) or a folder of images with a run
of lossheads-train, read as that run read its own data. Writes one row per input: its id, p_<label>
per class and the predicted label under the run's threshold.
  ckpt_path   the run folder (its checkpoints/last.ckpt) or a checkpoint file inside it
  data.path   the file or folder to score (a CSV may need data.delimiter, data.encoding or data.skip_rows)
  output      where to write (default predictions.csv in the current folder); a file that exists is
              replaced only with overwrite=true. Never replaced, whatever overwrite says: the input
              file, a file of a run or sweep folder (inside one, output is a new .csv file)
  model._target_   your own network's class, if the run used one (a run folder never chooses code)"""


def main(argv: list[str]) -> Path:
    try:
        args = OmegaConf.from_dotlist(argv)
    except Exception as exc:  # noqa: BLE001 -- a malformed key=value is the user's input
        raise ConfigError(f"cannot read the arguments ({exc}): {USAGE}") from None
    unknown = sorted(set(args) - {"ckpt_path", "data", "output", "model", "overwrite"})
    require(not unknown, "arguments", unknown, f"use {USAGE}")
    data_options = OmegaConf.to_container(args.get("data") or {})
    path = Path(str(data_options.get("path") or ""))
    require(bool(data_options.get("path")) and path.exists(), "data.path", data_options.get("path"),
            f"give an existing file or folder to score: {USAGE}")  # fmt: skip
    output = checked_output(Path(str(args.get("output") or "predictions.csv")), path, args.get("overwrite", False))
    model_target = (args.get("model") or {}).get("_target_")
    run_dir, _, prep, head, net = load_run(args.get("ckpt_path"), model_target)
    require("image" in prep or "table" in prep, "ckpt_path", str(run_dir),
            f"it trained on data={prep['data']}, a built-in set: predict reads tables or images")  # fmt: skip
    if "image" in prep:
        require(path.is_dir(), "data.path", str(path), "this run trained on images: give a folder of images")
        ids, features = image_inputs(prep, path)
    else:
        require(path.is_file(), "data.path", str(path), "this run trained on a table: give a CSV, Parquet or .npz")
        ids, features = table_inputs(prep, path, data_options)
    probs, preds = predict(head, net, features)
    write_predictions(output, prep, ids, probs, preds)
    print(f"wrote {output}: {len(ids)} rows, {prep['task']} ({', '.join(prep['label_names'][:10])}), run {run_dir}")
    return output


def checked_output(output: Path, data_path: Path, overwrite: object) -> Path:
    """`output`, refused before any scoring where writing it would lose something: a folder, a missing
    or read-only folder, the input itself, a file of a run or sweep folder (inside one, only a new
    .csv file), or an existing file without overwrite=true."""
    require(isinstance(overwrite, bool), "overwrite", overwrite, "use overwrite=true or overwrite=false")
    shown = str(output)
    example = output / "predictions.csv"
    require(not output.is_dir(), "output", shown, f"it is a folder: give a file name, e.g. output={example}")
    folder = output.resolve().parent
    require(folder.is_dir(), "output", shown, f"its folder {folder} does not exist: create it, or choose another")
    require(os.access(folder, os.W_OK), "output", shown, f"its folder {folder} is not writable: choose another")
    require(not (output.exists() and os.path.samefile(output, data_path)), "output", shown,
            "it is the input file (data.path): choose another file name")  # fmt: skip
    run = enclosing_run(output)
    if run is not None:
        require(not output.exists(), "output", shown, f"it is a file of the run folder {run}, which predict "
                "never writes over: choose a new file name, or a folder outside the run")  # fmt: skip
        require(output.suffix == ".csv", "output", shown, f"it lies in the run folder {run}, where predict "
                "writes only a new .csv file beside the run's own: name it *.csv")  # fmt: skip
    require(not output.exists() or overwrite, "output", shown,
            "the file exists: add overwrite=true to replace it, or choose another name")  # fmt: skip
    return output


def cli() -> None:
    """Entry point of `python predict.py` and `lossheads-predict`: a bad input is one line on stderr
    and exit code 2."""
    if any(arg in ("-h", "--help") for arg in sys.argv[1:]):
        print(HELP)
        return
    try:
        main(sys.argv[1:])
    except ConfigError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
