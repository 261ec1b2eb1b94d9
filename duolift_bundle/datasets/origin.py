"""Where a case comes from: a real CT or a synthetic phantom.

Results on real and synthetic cases are reported apart everywhere (evaluation tables, the quick
start). A case is *synthetic* when its item says so (``"synthetic": true``) or when it carries the
phantom generator's exact labels (``lung_label`` / ``vessel_label``, which ``make_phantoms.py``
writes beside each phantom and no real CT has: a real CT's lung mask is computed from its image);
every other case is *real*.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ORIGINS", "SYNTHETIC_LABEL_KEYS", "case_origin"]

#: the two origins, in the order reports list them
ORIGINS: tuple[str, str] = ("real", "synthetic")
#: the item keys only phantoms carry (their exact labels)
SYNTHETIC_LABEL_KEYS: tuple[str, ...] = ("lung_label", "vessel_label")


def case_origin(item: Mapping[str, Any]) -> str:
    """``"synthetic"`` or ``"real"`` for a dataset item or datalist entry (see the module docstring)."""
    flag = item.get("synthetic")
    if flag is not None:
        return "synthetic" if bool(flag) else "real"
    return "synthetic" if any(key in item for key in SYNTHETIC_LABEL_KEYS) else "real"
