"""Parameter and multiply-accumulate counts, measured with forward hooks (no external libraries).

MACs count the Conv2d and Linear layers only (``k*k*cin/groups*cout*Hout*Wout`` and ``in*out``
per output position); batch norm, activations, pooling and the input normalisation are left out,
as in the paper's and the brief's figures (256.5 M MACs for ASMNet, 68 points, 224x224).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["count_macs", "count_parameters"]


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Number of parameters (buffers such as BN running statistics are not counted)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _conv_macs(module: nn.Conv2d, output: torch.Tensor) -> int:
    kh, kw = module.kernel_size
    per_position = kh * kw * (module.in_channels // module.groups) * module.out_channels
    return per_position * output.shape[-2] * output.shape[-1]


def _linear_macs(module: nn.Linear, output: torch.Tensor) -> int:
    positions = output[0].numel() // module.out_features
    return module.in_features * module.out_features * positions


@torch.no_grad()
def count_macs(model: nn.Module, input_size: int | tuple[int, int]) -> int:
    """Multiply-accumulates of one forward pass on a ``(1, 3, H, W)`` input.

    ``input_size`` is the side of a square input or ``(H, W)``. The model runs once in eval mode
    (its training flag is restored afterwards) on the device of its parameters.
    """
    height, width = (input_size, input_size) if isinstance(input_size, int) else input_size
    total = 0

    def hook(module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            total += _conv_macs(module, output)
        else:
            total += _linear_macs(module, output)

    handles = [
        m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    was_training = model.training
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    try:
        model.eval()
        model(torch.zeros(1, 3, height, width, device=device))
    finally:
        model.train(was_training)
        for handle in handles:
            handle.remove()
    return total
