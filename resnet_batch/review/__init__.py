"""The review layer: tools that read a finished output.

The review queue (review.py), the HTML report (report.py), exports to ImageFolder, CSV and
Label Studio (export.py), near-duplicates (neighbors.py) and accuracy against a labeled
folder (evaluate.py), the report's charts (charts.py). Imports core/, data/, model/ and
output/; never Ray.
"""
