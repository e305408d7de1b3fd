"""genjax.data: datasets held in memory as numpy arrays, and the input pipeline.

``load_dataset(config.data)`` returns a ``Dataset`` (see ``registry.py``);
``TrainIterator`` and ``eval_batches`` turn its arrays into batches (see
``pipeline.py``). Importing this package registers every built-in dataset;
heavy dependencies (TFDS, grain, scikit-learn) are imported only when used.
"""

from genjax.data.pipeline import TrainIterator, eval_batches
from genjax.data.registry import (
    Dataset,
    DatasetError,
    dataset_kind,
    list_datasets,
    load_dataset,
    register_dataset,
)

# Imported for their registrations.
from genjax.data import folder as _folder  # noqa: F401  isort:skip
from genjax.data import images as _images  # noqa: F401  isort:skip
from genjax.data import synthetic as _synthetic  # noqa: F401  isort:skip
from genjax.data import text  # noqa: F401  isort:skip
from genjax.data import toy2d as _toy2d  # noqa: F401  isort:skip



def dataset_from_state(name: str, data_state: dict):
    """What a sampler needs of dataset ``name``, rebuilt from a checkpoint's
    data state alone (a text dataset's vocabulary), or None where the data
    itself must be loaded (images, points).

    Raises:
      DatasetError: a text dataset's state that holds no tokenizer.
    """
    if dataset_kind(name) == "text":
        return text.SavedVocabulary(name, text.tokenizer_from_state(data_state))
    return None


__all__ = [
    "Dataset",
    "DatasetError",
    "TrainIterator",
    "dataset_from_state",
    "dataset_kind",
    "eval_batches",
    "list_datasets",
    "load_dataset",
    "register_dataset",
]
