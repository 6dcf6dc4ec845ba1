"""The config layer: what a job is asked to do and what it will run. Each option declared once
(options.py), a job's LabelConfig built and checked from them (label_config.py), a config
file read (config_file.py), and the ExecutionPlan made of a config, the weights and the
cluster (plan.py) with its estimated time (estimate.py); what a run writes about itself
(description.py). No Ray, no torch."""
