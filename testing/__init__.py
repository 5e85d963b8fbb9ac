"""Synthetic data for tests and benchmarks: survey files of every supported format and
spectra with known kinematics. Nothing in the pipeline imports this package."""
