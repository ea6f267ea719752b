"""What only the notebooks use: the experiments (rows, recipes), the feature studies, the theory of the margin
bounds, the statistics behind every claim, the figures, and the runner behind ``make reproduce``.

The reusable library (losses, backbones, data, training, evaluation) is the parent package; this subpackage
builds the paper's experiments from it.
"""
