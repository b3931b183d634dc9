"""Entry points: argument handling, --help, exit codes. Imports the rest; nothing imports it."""
