"""snnkit: train deep spiking neural networks efficiently and carry them to deployment.

The Python API (:mod:`snnkit.api`: ``configure``, ``tensor_data``, ``train``, ``resume``, ``load``,
``export``, ``evaluate``, ``convert``) is importable from here, loaded on first use so that
``import snnkit`` (and ``snnkit.deploy``) does not load the training code.
"""
__version__ = "0.1.0"

API = ("configure", "tensor_data", "train", "resume", "load", "export", "evaluate", "convert",
       "to_original_state_dict")


def __getattr__(name: str):
    if name in API:
        from . import api

        return getattr(api, name)
    raise AttributeError(f"module 'snnkit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *API])
