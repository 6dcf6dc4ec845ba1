"""The command-line layer: it parses (arguments.py), configures (config files, the paths a
submitted job ships: shipping.py) and shows (console.py, reporters.py, summary lines), then
hands the job to run/. It never imports Ray: what it needs of a cluster, run/ does."""
