"""The output layer: Parquet part files and who may write them.

A job output has one writer at a time (ownership.py: a lease taken by a conditional
create; lease_record.py: what a lease says), holds only files the job can prove it wrote,
and is written part by part so a resume can trust every file it finds (writer.py, named
by part_names.py; repair.py sets aside what it cannot trust). record.py is the run record
that says what made the rows; features.py reads an output back a row group at a time.
Imports core/ only.
"""
