"""Numerical analysis on arrays: similarity, matching, alignment, concentration, bootstrap.

No model code here: callers pass activations and ablation effects as numpy arrays.
"""
