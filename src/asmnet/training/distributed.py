"""Data-parallel training helpers: torchrun's environment, the process group, collectives.

``torchrun --nproc-per-node N -m asmnet train ...`` (or ``asmnet train --nproc N``) starts N
processes with RANK, LOCAL_RANK and WORLD_SIZE in their environment. :func:`setup` reads them,
picks the device (``cuda:LOCAL_RANK`` with NCCL, or the CPU with Gloo) and joins the process
group with a timeout, so that a rank which dies or stalls ends the job with an error instead of
leaving the others waiting forever. Without those variables (or with WORLD_SIZE 1) nothing is
initialised and every helper here is a no-op: single-process training is unchanged.

BatchNorm: under DDP each rank normalises its own share of the batch unless the layers are
synchronised. PyTorch's ``SyncBatchNorm`` runs on GPUs only, so on the CPU :class:`SyncBatchNorm2d`
does the same with one all-reduce per layer and pass; the batch statistics are then those of the
global batch, as in a single process.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from ..errors import AsmnetError

DEFAULT_TIMEOUT_MIN = 15.0
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the job. The default is a plain single process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None  # set by setup() for DDP; single-process runs pick their own
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        """True when this process is one of several (a process group is initialised)."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that logs and writes the run folder."""
        return self.rank == 0


SINGLE = DistContext()


def env_context() -> DistContext:
    """Rank, world size and local rank from torchrun's environment (single process if absent)."""
    if not all(k in os.environ for k in ENV_KEYS):
        return SINGLE
    try:
        rank, world, local = (int(os.environ[k]) for k in ENV_KEYS)
    except ValueError as exc:
        raise AsmnetError(f"bad torchrun environment {[os.environ[k] for k in ENV_KEYS]}: {exc}") from None
    return DistContext(rank, world, local)


def under_launcher() -> bool:
    """True when this process was started by torchrun (or another launcher) with WORLD_SIZE > 1."""
    return env_context().enabled


def per_rank_batch(batch_size: int, world_size: int) -> int:
    """Each rank's share of the global batch ``batch_size``; it must divide evenly."""
    if batch_size < 1:
        raise AsmnetError(f"--batch-size must be positive, got {batch_size}")
    if batch_size % world_size:
        raise AsmnetError(f"--batch-size {batch_size} is the global batch and must be divisible by the "
                          f"{world_size} processes (e.g. {max(world_size, batch_size // world_size * world_size)})")
    return batch_size // world_size


def ddp_device(name: str, local_rank: int) -> torch.device:
    """This rank's device for ``--device NAME``: ``cuda:LOCAL_RANK`` for auto/cuda, else the CPU."""
    kind = torch.device(("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name).type
    if kind == "cpu":
        return torch.device("cpu")
    if kind != "cuda":
        raise AsmnetError(f"distributed training runs on cpu or cuda, not {name!r}")
    if not torch.cuda.is_available():
        raise AsmnetError(f"--device {name}: CUDA is not available on this machine")
    if local_rank >= torch.cuda.device_count():
        raise AsmnetError(f"local rank {local_rank} has no GPU ({torch.cuda.device_count()} visible): "
                          "start at most one process per GPU (--nproc-per-node)")
    return torch.device("cuda", local_rank)


def setup(device_name: str, timeout_min: float = DEFAULT_TIMEOUT_MIN) -> DistContext:
    """Join the process group when launched by torchrun with WORLD_SIZE > 1; else return SINGLE.

    Gloo on the CPU, NCCL on CUDA (each rank on ``cuda:LOCAL_RANK``). Collectives that wait longer
    than ``timeout_min`` minutes raise, so a dead or stuck rank ends the job instead of hanging it.
    """
    ctx = env_context()
    if not ctx.enabled:
        return SINGLE
    if timeout_min <= 0:
        raise AsmnetError(f"the distributed timeout must be positive, got {timeout_min} minutes")
    device = ddp_device(device_name, ctx.local_rank)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
    if not dist.is_initialized():
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_min),
                                rank=ctx.rank, world_size=ctx.world_size)
    return DistContext(ctx.rank, ctx.world_size, ctx.local_rank, device, backend)


def cleanup(ctx: DistContext, graceful: bool = False) -> None:
    """Leave the process group (if this process joined one). ``graceful``: wait for the other ranks
    first (a rank tearing Gloo down while a peer still talks to it can abort that peer)."""
    if ctx.enabled and dist.is_initialized():
        if graceful:
            dist.barrier()
        dist.destroy_process_group()


def is_peer_failure(exc: BaseException) -> bool:
    """True for the errors a collective raises when another rank died, stalled or timed out."""
    if isinstance(exc, dist.DistError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and any(
        k in text for k in ("gloo", "nccl", "connection reset", "connection closed", "timed out"))


def barrier(ctx: DistContext) -> None:
    """Wait for every rank (no-op in a single process)."""
    if ctx.enabled:
        if ctx.backend == "nccl":
            dist.barrier(device_ids=[ctx.local_rank])
        else:
            dist.barrier()


def broadcast_object(ctx: DistContext, obj: Any) -> Any:
    """Rank 0's ``obj`` on every rank (pickled; for small things such as a shape model)."""
    if not ctx.enabled:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0, device=ctx.device if ctx.backend == "nccl" else None)
    return box[0]


def all_gather_object(ctx: DistContext, obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (a one-item list in a single process)."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


@torch.no_grad()
def broadcast_state(ctx: DistContext, module: nn.Module) -> None:
    """Overwrite every parameter and buffer of ``module`` with rank 0's, in place."""
    if not ctx.enabled:
        return
    for tensor in module.state_dict().values():
        if tensor.device.type == ctx.device.type:
            dist.broadcast(tensor, src=0)
        else:  # pragma: no cover - a CPU buffer in a CUDA model
            moved = tensor.to(ctx.device)
            dist.broadcast(moved, src=0)
            tensor.copy_(moved)


def shard_range(n: int, ctx: DistContext) -> tuple[int, int]:
    """This rank's contiguous slice ``[lo, hi)`` of ``n`` items (the last ranks may get fewer)."""
    per = -(-n // ctx.world_size)
    lo = min(n, ctx.rank * per)
    return lo, min(n, lo + per)


def gather_rows(ctx: DistContext, rows: torch.Tensor, n: int) -> torch.Tensor:
    """Concatenate every rank's :func:`shard_range` rows of an ``n``-row array, in order, on every rank."""
    if not ctx.enabled:
        return rows
    per = -(-n // ctx.world_size)
    padded = torch.zeros((per, *rows.shape[1:]), dtype=rows.dtype, device=ctx.device)
    padded[: len(rows)] = rows.to(ctx.device)
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded)
    return torch.cat(parts)[:n].cpu()


class _SyncBatchNormFn(torch.autograd.Function):
    """Batch normalisation with statistics over every rank's batch, forward and backward.

    Forward: PyTorch's fused kernel normalises this rank's share with its own statistics and
    returns them (mean, inverse std). One all-reduce of every rank's count, mean and sum of
    squared deviations (each rank fills its own row of a ``(world, 2C + 1)`` table, so the sum is
    an all-gather) lets them combine exactly (Chan et al.'s parallel variance, in float64); the
    output is then moved from the local to the global statistics by a per-channel affine map.

    Backward: PyTorch's fused BatchNorm backward with the global mean and inverse std gives this
    rank's input gradient as if its share were the whole batch, and the per-channel sums of ``dy``
    and ``dy * (x - mean)`` over the share (they are the weight and bias gradients). One all-reduce
    of those sums gives the global ones; the difference between the global and the local formula
    is per channel an affine function of ``x``, added in place. The weight and bias get this
    rank's share of their gradients; DDP sums those over the ranks.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, eps: float):  # type: ignore[override]
        world, rank, c = dist.get_world_size(), dist.get_rank(), x.shape[1]
        count = x.numel() // c
        y, mean, invstd = torch.native_batch_norm(x, weight, bias, None, None, True, 0.0, eps)
        mean, invstd = mean.double(), invstd.double()
        var = (invstd.pow(-2) - eps).clamp_min(0.0)
        table = torch.zeros((world, 2 * c + 1), dtype=torch.float64, device=x.device)
        table[rank, :c], table[rank, c : 2 * c], table[rank, 2 * c] = mean, var * count, count
        dist.all_reduce(table)
        means, m2s, counts = table[:, :c], table[:, c : 2 * c], table[:, 2 * c :]
        total = counts.sum()
        g_mean = (means * counts).sum(0) / total
        g_var = (m2s + counts * (means - g_mean) ** 2).sum(0) / total
        g_invstd = torch.rsqrt(g_var + eps)
        # y = (x - mean) invstd w + b  ->  (x - g_mean) g_invstd w + b, per channel
        ratio = g_invstd / invstd
        shift = bias.double() * (1.0 - ratio) + (mean - g_mean) * g_invstd * weight.double()
        shape = (1, c, 1, 1)
        y = torch.addcmul(shift.to(y.dtype).view(shape), y, ratio.to(y.dtype).view(shape))
        g_mean, g_var = g_mean.to(x.dtype), g_var.to(x.dtype)
        ctx.save_for_backward(x, weight, g_mean, g_invstd.to(x.dtype))
        ctx.counts = (float(count), float(total))
        ctx.mark_non_differentiable(g_mean, g_var)
        return y, g_mean, g_var, float(total)

    @staticmethod
    def backward(ctx, dy: torch.Tensor, *_):  # type: ignore[override]
        x, weight, mean, invstd = ctx.saved_tensors
        n_local, n_total = ctx.counts
        dx, d_weight, d_bias = torch.ops.aten.native_batch_norm_backward(
            dy.contiguous(), x, weight, None, None, mean, invstd, True, 0.0, [True, True, True])
        local = torch.cat([d_bias, d_weight / invstd]).double()  # sums of dy and of dy * (x - mean)
        summed = local.clone()
        dist.all_reduce(summed)
        c = x.shape[1]
        inv, w = invstd.double(), weight.double()
        # the fused kernel used the local sums over n_local; the maths wants the global ones over n_total
        k_diff = inv * inv * (local[c:] / n_local - summed[c:] / n_total)
        mean_diff = local[:c] / n_local - summed[:c] / n_total
        beta = inv * w * k_diff
        alpha = inv * w * mean_diff - beta * mean.double()
        shape = (1, c, 1, 1)
        dx.addcmul_(x, beta.to(dx.dtype).view(shape)).add_(alpha.to(dx.dtype).view(shape))
        return dx, d_weight, d_bias, None


class SyncBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics cover the batches of all ranks, on any device.

    PyTorch's ``nn.SyncBatchNorm`` runs on GPUs only; this does the same on the CPU (Gloo) with
    one all-reduce per layer in each direction (:class:`_SyncBatchNormFn`). In eval mode, or
    outside a process group of several ranks, it is a plain BatchNorm2d. Its state dict has the
    same keys as BatchNorm2d's.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        c = x.shape[1]
        weight = self.weight if self.affine else x.new_ones(c)
        bias = self.bias if self.affine else x.new_zeros(c)
        y, mean, var, total = _SyncBatchNormFn.apply(x, weight, bias, self.eps)
        if self.track_running_stats:
            self._update_running_stats(mean, var, total)
        return y

    @torch.no_grad()
    def _update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, total: float) -> None:
        """Running mean and (unbiased) variance, as BatchNorm2d updates them."""
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        unbiased = var * (total / max(total - 1.0, 1.0))
        self.running_mean.lerp_(mean.to(self.running_mean.dtype), factor)
        self.running_var.lerp_(unbiased.to(self.running_var.dtype), factor)


def convert_sync_batchnorm(module: nn.Module, device: torch.device) -> nn.Module:
    """Synchronise the BatchNorm2d layers of ``module`` across ranks (in place where possible).

    CUDA: PyTorch's fused ``nn.SyncBatchNorm``. CPU: :class:`SyncBatchNorm2d`. The parameters and
    buffers are the same tensor objects, so optimisers built before or after see the same ones.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    return _swap_bn(module)


def _swap_bn(module: nn.Module) -> nn.Module:
    if type(module) is nn.BatchNorm2d:
        new = SyncBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                              module.track_running_stats, device=None, dtype=None)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        swapped = _swap_bn(child)
        if swapped is not child:
            setattr(module, name, swapped)
    return module


def torchrun_command(nproc: int, args: list[str]) -> list[str]:
    """``python -m torch.distributed.run --standalone --nproc-per-node N -m asmnet train ARGS``.

    ``--standalone`` runs a single-node rendezvous on a free local port, so several jobs on one
    machine do not collide.
    """
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
            "-m", "asmnet", "train", *args]


def launch_env(nproc: int) -> dict[str, str]:
    """The launched processes' environment: the cores shared out between them (OMP_NUM_THREADS),
    unless the caller already chose."""
    env = dict(os.environ)
    if "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // nproc))
    return env
