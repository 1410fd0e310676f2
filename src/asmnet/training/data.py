"""Training data on torch: face regions decoded once, augmented samples, a resumable sampler."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..errors import DataError
from ..formats import FaceRecord, read_image
from ..formats.faces import check_on_image
from ..geometry import CROP_SCALE, box_center_size, tight_box
from ..markup import Markup
from .augment import AugmentConfig, make_sample

# The face region kept in memory reaches this many landmark-box sizes from the box centre: more
# than any jittered, rotated crop needs (1.3 x 1.12 / 2 x sqrt 2 + shift < 1.2).
REGION_REACH = 1.2


@dataclass
class FaceRegion:
    """A face cut out of its image and scaled so that the face is at most ~out_size pixels."""

    image: np.ndarray  # BGR uint8
    points: np.ndarray  # (N, 2) in region pixels
    pose: np.ndarray | None


def cut_region(image: np.ndarray, points: np.ndarray, out_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Region around the face and the points in it; downscaled (never upscaled) to save memory."""
    center, size = box_center_size(tight_box(points))
    reach = REGION_REACH * max(size, 1.0)
    h, w = image.shape[:2]
    x0, y0 = max(int(np.floor(center[0] - reach)), 0), max(int(np.floor(center[1] - reach)), 0)
    x1, y1 = min(int(np.ceil(center[0] + reach)) + 1, w), min(int(np.ceil(center[1] + reach)) + 1, h)
    region = image[y0:y1, x0:x1] if x1 > x0 and y1 > y0 else image
    if region is image:
        x0 = y0 = 0
    pts = points - [x0, y0]
    k = min(1.0, out_size / max(size, 1.0))
    if k < 1.0:
        # scaling about pixel centres: u' = (u + 0.5) k - 0.5
        new_size = (max(1, round(region.shape[1] * k)), max(1, round(region.shape[0] * k)))
        kx, ky = new_size[0] / region.shape[1], new_size[1] / region.shape[0]
        region = cv2.resize(region, new_size, interpolation=cv2.INTER_AREA)
        pts = (pts + 0.5) * [kx, ky] - 0.5
    return np.ascontiguousarray(region), pts


def load_regions(
    records: list[FaceRecord], out_size: int, max_pixels: int | None = None, keep_off_image: bool = False
) -> tuple[list[FaceRegion], list[int], list[DataError]]:
    """Decode every face once. Returns regions, the indices of the records kept, and the errors:
    unreadable images and, unless ``keep_off_image``, annotations lying off their image."""
    regions, kept, errors = [], [], []
    for i, rec in enumerate(records):
        try:
            image = read_image(rec.image, max_pixels=max_pixels)
            if not keep_off_image:
                check_on_image(rec.points, image.shape[1], image.shape[0], rec.image)
        except DataError as exc:
            errors.append(exc)
            continue
        region, pts = cut_region(image, rec.points, out_size)
        regions.append(FaceRegion(region, pts, rec.pose))
        kept.append(i)
    return regions, kept, errors


class FaceDataset(Dataset):
    """Augmented training samples. Items are (index, epoch) pairs from :class:`EpochSampler`.

    Each sample's randomness comes from (seed, epoch, index) alone, so a run gives the same
    samples whatever the number of workers, and a resumed run repeats them exactly.
    ``repeats`` (one count per region, default 1) oversamples regions: every copy is an item of
    its own, so the copies of one face in an epoch get different augmentations.
    """

    def __init__(
        self,
        regions: list[FaceRegion],
        out_size: int,
        markup: Markup,
        augment: AugmentConfig,
        seed: int = 0,
        crop_scale: float = CROP_SCALE,
        repeats: list[int] | None = None,
    ):
        self.regions, self.out_size, self.markup = regions, out_size, markup
        self.augment, self.seed, self.crop_scale = augment, seed, crop_scale
        if repeats is not None and (len(repeats) != len(regions) or min(repeats, default=1) < 1):
            raise ValueError("repeats needs one count >= 1 per region")
        # item -> region; without repeats the identity, so plain runs draw the samples they always did
        self.sources = [i for i, n in enumerate(repeats or [1] * len(regions)) for _ in range(n)]

    def __len__(self) -> int:
        return len(self.sources)

    def __getitem__(self, item: tuple[int, int] | int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        index, epoch = item if isinstance(item, tuple) else (item, 0)
        rng = np.random.default_rng([self.seed, epoch, index])
        r = self.regions[self.sources[index]]
        crop, targets, pose = make_sample(
            r.image, r.points, r.pose, self.out_size, self.markup, rng, self.augment, self.crop_scale
        )
        return (
            torch.from_numpy(crop).permute(2, 0, 1),  # uint8 CHW RGB; the model normalises
            torch.from_numpy(targets.reshape(-1).astype(np.float32)),
            torch.from_numpy(pose.astype(np.float32)),
        )


class EpochSampler(Sampler):
    """Yields (index, epoch) in a seeded order per epoch; optionally this rank's share (DDP).

    Rank ``r`` of ``world_size`` takes every ``world_size``-th sample of the epoch's order from
    position ``r``; the order is padded by repetition so that every rank gets as many. With
    ``batch_size`` (the global batch, a multiple of ``world_size``) and more samples than one batch,
    the epoch keeps only whole global batches instead (as ``DataLoader(drop_last=True)`` does in one
    process): then the ranks' k-th batches of ``batch_size / world_size`` samples together are
    exactly the k-th batch a single process would draw.
    """

    def __init__(
        self,
        n: int,
        seed: int,
        shuffle: bool = True,
        rank: int = 0,
        world_size: int = 1,
        batch_size: int | None = None,
    ):
        if batch_size is not None and batch_size % world_size:
            raise ValueError(f"global batch {batch_size} is not a multiple of the world size {world_size}")
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.rank, self.world_size, self.epoch = rank, world_size, 0
        self.batch_size = batch_size

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _used(self) -> int:
        """Samples taken per epoch over all ranks."""
        if self.batch_size and self.n > self.batch_size:
            return self.n // self.batch_size * self.batch_size
        return -(-self.n // self.world_size) * self.world_size

    def __iter__(self):
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
            order = torch.randperm(self.n, generator=g).tolist()
        else:
            order = list(range(self.n))
        used = self._used()
        order = order[:used] + order[: max(0, used - self.n)]  # pad so every rank gets as many
        return iter([(i, self.epoch) for i in order[self.rank :: self.world_size]])

    def __len__(self) -> int:
        return self._used() // self.world_size
