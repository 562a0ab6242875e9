"""The snnkit metadata of an exported graph: the keys every form writes, and every value snnkit
reads checked with its type and range in one place (:func:`read_metadata`), before anything uses it.

A graph carries its facts as JSON strings in ``metadata_props``. A file can come from anywhere (a
hand edit, another tool writing snnkit-like keys, a truncated copy), so a value of the wrong type
or out of range is refused in one line that names the key, and nothing downstream indexes the
metadata unchecked. Keys snnkit does not know (onnxruntime's quantizer's, say) are left alone."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Optional

from snnkit.errors import SnnkitError

from . import MAX_T

META_KEYS = ("snnkit_version", "format", "T", "neuron", "layer_names", "topology", "computed_once", "input_shape",
             "input_kind", "input_layout", "normalization", "class_names", "dataset", "model", "opset",
             "config_hash", "checkpoint", "exporter")
FORM_KEYS = {"unrolled": (), "streaming": ("states",), "int8": ("quantization",)}
KNOWN_KEYS = set(META_KEYS).union(*FORM_KEYS.values())

Check = Callable[[Any], Optional[str]]  # None when the value is good, else what it should have been


def whole(lo: int, hi: int) -> Check:
    return lambda v: None if type(v) is int and lo <= v <= hi else f"a whole number from {lo} to {hi:,}"


def text(v: Any) -> Optional[str]:
    return None if isinstance(v, str) and v else "a non-empty string"


def number(v: Any) -> Optional[str]:
    return None if type(v) in (int, float) and math.isfinite(v) else "a finite number"


def one_of(*values: str) -> Check:
    return lambda v: None if v in values else "one of " + ", ".join(map(repr, values))


def matches(pattern: str, what: str) -> Check:
    return lambda v: None if isinstance(v, str) and re.fullmatch(pattern, v) else what


def list_of(item: Check, at_least: int = 0) -> Check:
    def check(v: Any) -> Optional[str]:
        if not isinstance(v, list) or len(v) < at_least:
            return f"a list of at least {at_least} values"
        return next((f"a list whose every item is {bad}" for x in v if (bad := item(x))), None)
    return check


def record(required: dict[str, Check], optional: Optional[dict[str, Check]] = None) -> Check:
    def check(v: Any) -> Optional[str]:
        if not isinstance(v, dict):
            return f"an object with {', '.join(map(repr, required))}"
        for key, field in (*required.items(), *((k, c) for k, c in (optional or {}).items() if k in v)):
            if key not in v or (bad := field(v[key])):
                return f"an object whose {key!r} is {bad or 'present'}"
        return None
    return check


SHAPE = list_of(whole(1, 1 << 20), at_least=1)
NAMES = list_of(text)
# what snnkit reads, per key; every graph snnkit writes carries each of these for its form
READ = {
    "format": one_of(*FORM_KEYS),
    "T": whole(1, MAX_T),
    "input_kind": one_of("static", "event"),
    "input_shape": SHAPE,
    "layer_names": list_of(text, at_least=1),
    "computed_once": NAMES,
    "checkpoint": record({"file": matches(r"[^/\\]+", "a file name without folders"),
                          "sha256": matches(r"[0-9a-f]{64}", "a SHA-256 in hex")},
                         {"relative": matches(r"[^/\\][^\\]*", "a relative path with / between folders"),
                          "bytes": whole(0, 1 << 50)}),
    "states": list_of(record({"input": text, "output": text, "layer": text, "shape": SHAPE, "initial": number}),
                      at_least=1),
    "quantization": record({"float32_layers": NAMES}),
}


def describe(value: Any) -> str:
    shown = json.dumps(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."


def read_metadata(path: Path, props: dict[str, str]) -> Optional[dict]:
    """The snnkit metadata in a graph's ``props`` (None when it has none), every value snnkit reads
    checked; a missing key or a wrong value is one line naming it."""
    if "snnkit_version" not in props:
        return None
    try:
        meta = {k: json.loads(v) for k, v in props.items() if k in KNOWN_KEYS}
    except json.JSONDecodeError:
        raise SnnkitError(f"{path} has snnkit metadata whose values are not JSON; re-export it with "
                          "`snnkit export`") from None
    form = meta.setdefault("format", "unrolled")
    if bad := READ["format"](form):
        raise SnnkitError(f"{path}: its snnkit metadata 'format' is {describe(form)}, not {bad}; "
                          "re-export it with `snnkit export`")
    for key in ("T", "input_kind", "input_shape", "layer_names", "computed_once", *FORM_KEYS[form]):
        if key not in meta:
            raise SnnkitError(f"{path} is an snnkit {form} graph whose metadata lacks {key!r}; "
                              "re-export it with `snnkit export`")
    for key in READ.keys() & meta.keys():
        if bad := READ[key](meta[key]):
            raise SnnkitError(f"{path}: its snnkit metadata {key!r} is {describe(meta[key])}, not {bad}; "
                              "re-export it with `snnkit export`")
    return meta
