"""The run layer: a label job on Ray, from its config to its last saved row; the only layer
that knows Ray.

job.py runs a job: pipeline.py wires Ray Data to the stages of the lower layers, saving.py
writes what comes back, listing.py and bookkeeping.py list the inputs and prove each has
exactly one row; ray_session.py starts or joins Ray, jobs_client.py reaches a cluster's job
server, and progress/ gathers how the job is going.
"""
