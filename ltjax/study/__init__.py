"""Studies: a grid of recipes x overrides x seeds, run cell by cell, aggregated into tables.

cells.py      the study file's format, its cells, their workdirs, states and commands
runner.py     runs the unfinished cells on this host (resumable; stage-1 reuse; reports)
aggregate.py  study.json, the markdown table and plots, from the cells' records
"""
