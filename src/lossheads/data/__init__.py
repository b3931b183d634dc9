"""Datamodules: each knows its task (binary | multiclass | multilabel), classes and features."""

from lossheads.data.base import ArrayDataModule, InMemoryBatches, LabeledArrays
from lossheads.data.csv_file import CsvData
from lossheads.data.embedded import BreastCancer, Digits, DigitsMultilabel
from lossheads.data.synthetic import SyntheticBinary, SyntheticLongTail, SyntheticMulticlass, SyntheticMultilabel

__all__ = [
    "ArrayDataModule",
    "BreastCancer",
    "CsvData",
    "Digits",
    "DigitsMultilabel",
    "InMemoryBatches",
    "LabeledArrays",
    "SyntheticBinary",
    "SyntheticLongTail",
    "SyntheticMulticlass",
    "SyntheticMultilabel",
]
