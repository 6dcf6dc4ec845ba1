"""The run layer: a job from the command line to its last saved row; the only layer that
knows Ray.

cli.py parses commands (arguments.py) and config.py checks their arguments; plan.py turns
them into one ExecutionPlan; job.py runs it: pipeline.py wires Ray Data to the stages of the
lower layers, saving.py writes what comes back, and bookkeeping.py proves every input has
exactly one row. ray_session.py starts or joins Ray, submit.py sends a job to a cluster, and
progress.py (the run's counts), watch.py, reporters.py, console.py and summary.py say how the job is
going. Imports every other layer.
"""
