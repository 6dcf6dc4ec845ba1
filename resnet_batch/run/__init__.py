"""The run layer: a job from the command line to its last saved row; the only layer that
knows Ray.

cli.py parses commands and config.py checks their arguments; plan.py turns them into one
ExecutionPlan; pipeline.py wires Ray Data to the stages of the lower layers, saving.py
writes what comes back, and check.py proves every input has exactly one row. ray_session.py
starts or joins Ray, submit.py sends a job to a cluster, and progress.py, console.py and
summary.py say how the job is going. Imports every other layer.
"""
