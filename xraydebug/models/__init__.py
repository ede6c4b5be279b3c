"""Classifiers: architectures and their recipes, checkpoints, training, inference, evaluation."""
