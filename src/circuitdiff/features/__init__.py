"""Sparse crosscoders for model diffing: which of the teacher's features the student kept, dropped, invented.

``features(teacher, student, tasks, out)`` trains a BatchTopK crosscoder on both models' residual streams at
matched sites, classes every latent with the relative decoder norm confirmed by Latent Scaling, and measures
each latent's effect on each task through the spliced reconstruction. See docs/features.md.
"""

from circuitdiff.features.run import FeatureOptions, features

__all__ = ["FeatureOptions", "features"]
