"""The command-line layer: it parses (arguments.py, tool_arguments.py, command_line.py),
configures (config files, the paths a submitted job ships: shipping.py) and shows
(console.py, progress_bar.py, summary_text.py), then hands the job to run/ (main.py,
cluster_jobs.py, review_commands.py). It never imports Ray: what it needs of a cluster, run/
does."""
