"""python predict.py ckpt_path=RUN data.path=FILE_OR_DIR [output=predictions.csv]: score new data."""

from lossheads.cli.predict import cli

if __name__ == "__main__":
    cli()
