"""``pydicom._storage_sopclass_uids`` for pydicom-seg 0.4.1 under pydicom 3.

MONAI Label 0.8.5 imports pydicom-seg at start-up (for DICOM SEG conversion, which this app does
not use); pydicom-seg 0.4.1 imports ``pydicom._storage_sopclass_uids``, a module pydicom 3 removed
when it moved those names into ``pydicom.uid``. This finder answers that one module name with
``pydicom.uid`` when it is first imported, and nothing else. scripts/setup_monailabel.sh copies
this file into the environment's site-packages with a ``.pth`` line that imports it (Python runs
such lines at start-up; importing this costs no pydicom import until the alias is asked for).
"""

import importlib.abc
import importlib.util
import sys

ALIAS = "pydicom._storage_sopclass_uids"


class _UidAlias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path=None, target=None):
        if name != ALIAS:
            return None
        return importlib.util.spec_from_loader(name, self)

    def create_module(self, spec):
        import pydicom.uid

        return pydicom.uid

    def exec_module(self, module):
        return None


if not any(isinstance(f, _UidAlias) for f in sys.meta_path):
    sys.meta_path.append(_UidAlias())
