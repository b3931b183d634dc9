from lossheads.report.cli import main

main()
