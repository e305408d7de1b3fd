"""Evaluation shared by every family: sample quality and image grids.

``sample_quality.evaluate_samples`` judges any model's image samples against
a dataset (Fréchet distance, KID, classifier score, mode coverage, and the
Inception FID when weights are supplied); ``images`` draws sample grids.
"""
