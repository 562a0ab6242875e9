"""The config hash: one short digest of a resolved config, recorded in checkpoints, results.json
and ONNX metadata, so a deployed file names the config it was trained with.

A neutral module: training (:meth:`snnkit.config.Config.digest`) and deploy (the ONNX metadata)
both import it, and it imports nothing of either.
"""
from __future__ import annotations

import hashlib
import json


def config_hash(config: dict) -> str:
    """16 hex digits of the SHA-256 of ``config`` as JSON with sorted keys (the order of the YAML
    or of the overrides does not change it)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
