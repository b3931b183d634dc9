"""Datamodules: each knows its task (binary | multiclass | multilabel), classes and features."""

from lossheads.data.base import ArrayDataModule, InMemoryBatches, LabeledArrays
from lossheads.data.embedded import BreastCancer, Digits, DigitsMultilabel
from lossheads.data.image_folder import ImageFolder
from lossheads.data.images import MNIST, DigitsImages, ImageDataModule
from lossheads.data.synthetic import SyntheticBinary, SyntheticLongTail, SyntheticMulticlass, SyntheticMultilabel
from lossheads.data.table import CsvData, TableData

__all__ = [
    "ArrayDataModule",
    "BreastCancer",
    "CsvData",
    "Digits",
    "DigitsImages",
    "DigitsMultilabel",
    "ImageDataModule",
    "ImageFolder",
    "InMemoryBatches",
    "LabeledArrays",
    "MNIST",
    "SyntheticBinary",
    "SyntheticLongTail",
    "SyntheticMulticlass",
    "SyntheticMultilabel",
    "TableData",
]
