"""Training: data pipeline, augmentation, the training loop, checkpoints and export.

Modules here that need PyTorch import it themselves; ``augment`` and ``split`` are NumPy only.
"""
