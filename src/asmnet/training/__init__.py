"""Training: data pipeline, augmentation, the training loop and checkpoints (export: asmnet.packaging).

Modules here that need PyTorch import it themselves; ``augment`` and ``split`` are NumPy only.
"""
