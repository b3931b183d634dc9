"""Your own images: one sub-folder per class (as torchvision's ImageFolder), or multi-label from a
CSV of file names and 0/1 label columns. Decoded with Pillow: once into a uint8 cache when it fits
in memory, else per sample in DataLoader workers."""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from lossheads.config.validators import ConfigError, require, require_choice
from lossheads.data.base import LabeledArrays
from lossheads.data.images import ImageDataModule, check_shape, fits_in_memory
from lossheads.run.splits import sample_hashes, split_record

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}


class UnreadableImage(ConfigError):
    """An image file that Pillow cannot open or decode (truncated, corrupt, not an image).

    Raised in a DataLoader worker, it reaches the main process rebuilt by torch's
    `ExceptionWrapper.reraise`, which calls this class with the worker's whole traceback as text:
    its last line is the message, kept alone so that it is still one line
    (tests/test_bad_files.py fails if torch changes that)."""

    def __init__(self, message: str) -> None:
        last = message.strip().splitlines()[-1] if message.strip() else message
        super().__init__(last.split(f"{type(self).__name__}: ", 1)[-1])


@contextlib.contextmanager
def image_errors(file: Path) -> Iterator[None]:
    """Pillow's errors on one file (truncated, corrupt, not an image, a decompression bomb) as one
    line that names it."""
    from PIL import Image

    try:
        yield
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise UnreadableImage(f"data.path: {file} is not a readable image ({exc}): remove or fix it") from None


def decode(file: Path, mode: str, size: tuple[int, int] | None) -> np.ndarray:
    """One image as uint8 (C, H, W): converted to `mode` ("L" or "RGB"), resized to (H, W) if given."""
    from PIL import Image

    with image_errors(file), Image.open(file) as image:
        image = image.convert(mode)
        if size is not None and image.size != (size[1], size[0]):
            image = image.resize((size[1], size[0]), Image.BILINEAR)
        pixels = np.array(image, dtype=np.uint8)  # a writable copy
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)


class DecodedFiles(Dataset):
    """Per-sample decoding for the DataLoader path: picklable (file paths and numbers only)."""

    def __init__(self, files: Sequence[Path], targets: Tensor, mode: str, size: tuple[int, int]) -> None:
        self.files, self.targets, self.mode, self.size = list(files), targets, mode, size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor]:
        return torch.from_numpy(decode(self.files[index], self.mode, self.size)), self.targets[index]


class ImageFolder(ImageDataModule):
    name = "image_folder"

    def __init__(
        self,
        path: str | None = None,
        labels_csv: str | None = None,
        image_size: int | Sequence[int] | None = None,
        channels: str = "auto",
        **options: Any,
    ) -> None:
        super().__init__(**options)
        require(bool(path), "data.path", path, "give a folder with one sub-folder of images per class")
        self.root = Path(str(path)).expanduser()
        require(self.root.is_dir(), "data.path", str(path), "no such folder")
        self.labels_csv = None if labels_csv is None else Path(str(labels_csv)).expanduser()
        if self.labels_csv is not None:
            require(self.labels_csv.is_file(), "data.labels_csv", str(labels_csv), "no such file")
        self.size_given = check_shape("data.image_size", image_size)
        require_choice("data.channels", channels, ("auto", "gray", "rgb"))
        self.channels_option = channels
        self.scanned = False

    # -- what is in the folder --------------------------------------------------------------
    def scan(self) -> None:
        """File names, labels, the image size and the colour mode, from the files' headers only."""
        if self.scanned:
            return
        if self.labels_csv is None:
            self.files, targets = self._class_folders()
            self.task = "binary" if len(self.label_names) == 2 else "multiclass"
        else:
            self.files, targets = self._labels_table()
            self.task = "multilabel"
        self.targets, self.num_classes = targets, len(self.label_names)
        keep = self.subset(len(self.files))
        self.files, self.targets = [self.files[i] for i in keep], self.targets[keep]
        self.mode, self.size = self._mode_and_size()
        self.scanned = True

    def _class_folders(self) -> tuple[list[Path], np.ndarray]:
        folders = sorted(p for p in self.root.iterdir() if p.is_dir() and not p.name.startswith("."))
        files, labels = [], []
        for index, folder in enumerate(folders):
            found = sorted(f for f in folder.rglob("*") if f.suffix.lower() in EXTENSIONS and f.is_file())
            files += found
            labels += [index] * len(found)
        self.label_names = [f.name for f in folders]
        require(len(folders) >= 2, "data.path", str(self.root),
                f"found {len(folders)} class sub-folder(s); one sub-folder of images per class (>= 2)")  # fmt: skip
        empty = [f.name for f in folders if labels.count(folders.index(f)) == 0][:5]
        require(
            not empty, "data.path", str(self.root), f"class folder(s) {empty} hold no images ({sorted(EXTENSIONS)})"
        )
        return files, np.asarray(labels, dtype=np.int64)

    def _labels_table(self) -> tuple[list[Path], np.ndarray]:
        """First column: the file name relative to data.path; every other column: one label, 0 or 1."""
        assert self.labels_csv is not None
        try:
            with self.labels_csv.open(newline="", encoding="utf-8-sig") as handle:
                rows = [row for row in csv.reader(handle) if row]
        except (UnicodeDecodeError, csv.Error) as exc:
            raise ConfigError(f"data.labels_csv={str(self.labels_csv)!r}: not a UTF-8 CSV ({exc}): save it as "
                              "UTF-8 text") from None  # fmt: skip
        require(len(rows) >= 2 and len(rows[0]) >= 2, "data.labels_csv", str(self.labels_csv),
                "give a header (file, label1, label2, ...) and one row per image")  # fmt: skip
        header, rows = [h.strip() for h in rows[0]], rows[1:]
        self.label_names = header[1:]
        files = [self.root / row[0].strip() for row in rows]
        missing = [str(f) for f in files if not f.is_file()]
        require(not missing, "data.labels_csv", str(self.labels_csv),
                f"{len(missing)} listed file(s) are missing under data.path, e.g. {missing[:2]}")  # fmt: skip
        try:
            labels = np.asarray([[float(v) for v in row[1:]] for row in rows])
        except ValueError:
            raise ConfigError(f"data.labels_csv={str(self.labels_csv)!r}: label columns must hold 0 or 1") from None
        require(labels.shape[1] == len(self.label_names) and np.isin(labels, (0, 1)).all(), "data.labels_csv",
                str(self.labels_csv), "every row needs one 0 or 1 per label column")  # fmt: skip
        return files, labels.astype(np.float32)

    def _mode_and_size(self) -> tuple[str, tuple[int, int]]:
        from PIL import Image

        sizes, modes = set(), set()
        for file in self.files:
            with image_errors(file), Image.open(file) as image:
                sizes.add((image.height, image.width))
                modes.add(image.mode)
        gray = modes <= GRAY_MODES
        mode = {"gray": "L", "rgb": "RGB"}.get(self.channels_option, "L" if gray else "RGB")
        if self.size_given is not None:
            return mode, self.size_given
        require(len(sizes) == 1, "data.image_size", None,
                f"images have {len(sizes)} sizes, e.g. {sorted(sizes)[:2]}: give data.image_size=[H,W]")  # fmt: skip
        return mode, sizes.pop()

    def verify_files(self) -> None:
        """Before training on the DataLoader path, every file read through once: Pillow's `verify`
        checks a PNG's chunk checksums (and a truncated file's end) without decoding its pixels. A JPEG
        is only checked by decoding it, so a damaged one is found when a batch needs it: the run then
        stops with the same one line."""
        from PIL import Image

        for file in self.files:
            with image_errors(file), Image.open(file) as image:
                image.verify()

    def num_bytes(self) -> int:
        self.scan()
        return len(self.files) * (1 if self.mode == "L" else 3) * self.size[0] * self.size[1]

    # -- in memory: decode all once ---------------------------------------------------------
    def load(self) -> LabeledArrays:
        self.scan()
        pixels = np.stack([decode(f, self.mode, self.size) for f in self.files])
        return LabeledArrays(pixels, self.targets, self.task, self.num_classes)  # type: ignore[arg-type]

    # -- not in memory: split the file list, decode in the DataLoader's workers ----------------
    def setup(self, stage: str | None = None) -> None:
        if self.splits:
            return
        self.scan()
        decide = self.in_memory_option
        self.in_memory = decide == "true" or (decide == "auto" and fits_in_memory(self.num_bytes()))
        if self.in_memory:
            return super().setup(stage)
        self.verify_files()
        data = LabeledArrays(np.empty((len(self.files), 0)), self.targets, self.task, self.num_classes)  # type: ignore[arg-type]
        labels = data.hard_labels
        train, val, test = self.split(labels, len(self.files))
        channels = 1 if self.mode == "L" else 3
        self.input_shape = (channels, *self.size)
        self.num_features = int(np.prod(self.input_shape))
        sample = np.stack([decode(self.files[i], self.mode, self.size) for i in train[:2000]])
        self.prepare_features(sample, np.arange(len(sample)))  # statistics of (up to) 2,000 training images
        # by file name and size: hashing every file's pixels would cost the decoding not holding them saves
        names = np.array([[str(f.relative_to(self.root)), f.stat().st_size] for f in self.files], dtype=object)
        indices = {"train": train, "val": val, "test": test}
        self.split_record = split_record(self.name, sample_hashes(names, self.targets), indices)
        targets = torch.as_tensor(self.targets)
        targets = targets.float() if self.task == "multilabel" else targets.long()
        for split, idx in (("train", train), ("val", val), ("test", test)):
            self.split_indices[split] = idx
            self.splits[split] = (torch.as_tensor(idx), targets[torch.as_tensor(idx)])

    def dataset(self, split: str) -> Dataset:
        if self.in_memory:
            return super().dataset(split)
        indices, targets = self.splits[split]
        return DecodedFiles([self.files[i] for i in indices.tolist()], targets, self.mode, self.size)
