"""The network (torch only): ASMNet and its MobileNetV2 baseline, with size and cost counters."""

from .complexity import count_macs, count_parameters
from .model import ASMNet, build_model, head_l2

__all__ = ["ASMNet", "build_model", "count_macs", "count_parameters", "head_l2"]
