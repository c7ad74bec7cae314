"""GPT-SoVITS dataset preparation: annotations, audio, text, features, semantic codes, layout.

`prepare_dataset`, `PreparedDataset` and `PreparedItem` are importable from here;
they load lazily so that the service, which only parses annotation lists, does
not import torch through this package.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from worker.training.data.prepare import PreparedDataset, PreparedItem, prepare_dataset

__all__ = ["PreparedDataset", "PreparedItem", "prepare_dataset"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from worker.training.data import prepare

        return getattr(prepare, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
