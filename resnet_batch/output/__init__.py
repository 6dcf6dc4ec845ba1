"""The output layer: who may write a job's output and which files in it are the job's own.

A job output has one writer at a time (a lease file taken by a conditional create), and
a job deletes or reads back only files it can prove it wrote (ownership.py).
"""
