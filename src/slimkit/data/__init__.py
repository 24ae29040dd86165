"""Datasets, batched augmentation and loading.

``load_dataset(spec)`` turns a spec string (``digits``, ``shapes:...``, ``fashion-mnist``,
``cifar10:PATH`` or an image-folder path) into a :class:`DatasetBundle` of uint8 image
datasets; :class:`BatchLoader` yields normalized, augmented float batches from them, and can
resume mid-epoch exactly.
"""

from slimkit.data.base import DatasetBundle, TensorImageDataset
from slimkit.data.folder import ImageFolderDataset
from slimkit.data.loader import BatchLoader
from slimkit.data.spec import describe_dataset_kinds, list_dataset_kinds, load_dataset
from slimkit.data.transforms import AUGMENT_PRESETS

__all__ = [
    "AUGMENT_PRESETS",
    "BatchLoader",
    "DatasetBundle",
    "ImageFolderDataset",
    "TensorImageDataset",
    "describe_dataset_kinds",
    "list_dataset_kinds",
    "load_dataset",
]
