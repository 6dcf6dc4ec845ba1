"""The output layer: Parquet part files and who may write them.

A job output has one writer at a time (ownership.py: a lease taken by a conditional
create), holds only files the job can prove it wrote, and is written part by part so a
resume can trust every file it finds (writer.py). features.py reads an output back a row
group at a time. Imports core/ only.
"""
