"""The names a network configuration is made of, and their rules (torch-free).

One home for what ``asmnet.nn`` builds and ``asmnet.training`` / the command line accept, so
``asmnet train --help`` and argument checks work before PyTorch is imported. Adding a landmark
head means a name here, its module in ``asmnet/nn/model.py``, and its outputs in ``asmnet/nn/checkpoint.py``.
"""

from __future__ import annotations

#: The architectures :class:`asmnet.nn.ASMNet` builds: the paper's ASMNet, or the full MobileNetV2 baseline.
ARCHS: tuple[str, ...] = ("asmnet", "mnv2")

#: Landmark heads: ``pooled`` (linear, on the pooled features: the paper's) or ``grid`` (scores and
#: sub-cell offsets per cell of the stride-16 map; ``asmnet`` arch only).
HEADS: tuple[str, ...] = ("pooled", "grid")

#: Heads of the region refiner's part networks (``asmnet.nn.refiner.PatchNet``): ``pooled`` averages
#: the last feature map over the patch (the first shipped networks); ``spatial`` reads every cell of it.
PATCH_HEADS: tuple[str, ...] = ("pooled", "spatial")

#: Training losses (``asmnet.nn.losses``): ASM-LOSS, or the same without the ASM term.
LOSS_KINDS: tuple[str, ...] = ("asm", "mse")

#: Distances of the landmark terms.
POINT_LOSSES: tuple[str, ...] = ("mse", "l1", "wing")


def arch_head_problem(arch: str, head: str) -> str | None:
    """Why ``arch`` and ``head`` cannot make a network together, in a few words; None when they can."""
    if arch not in ARCHS:
        return f"unknown arch {arch!r}; expected one of {', '.join(ARCHS)}"
    if head not in HEADS:
        return f"unknown head {head!r}; expected one of {', '.join(HEADS)}"
    if head == "grid" and arch != "asmnet":
        return "the grid head needs arch 'asmnet'"
    return None
