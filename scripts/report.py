"""python scripts/report.py SWEEP_DIR [--metric val/auroc]: write a sweep's report by hand."""

from lossheads.report import main

if __name__ == "__main__":
    main()
