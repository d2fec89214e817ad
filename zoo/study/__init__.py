"""Studies: sweeps that run a grid of recipes, and reports that compare the runs.

Libraries without click (zoo/cli/study.py holds the commands); they import only the layers
below them (recipe, runs, io, checkpoint, errors).
"""
