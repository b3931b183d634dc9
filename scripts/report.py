"""python scripts/report.py SWEEP_DIR [--baseline loss=ce] [--metrics a,b] [--margin 0.01]: a report by hand."""

from lossheads.report import main

if __name__ == "__main__":
    main()
