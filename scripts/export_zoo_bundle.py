"""Write the bundle in the MONAI Model Zoo's layout (``models/<name>/`` of Project-MONAI/model-zoo).

    python scripts/export_zoo_bundle.py --out DIR [--name duolift_ct_reconstruction] [--bundle_root .]

``DIR`` (created; it must not exist, nothing is overwritten) receives:

- ``configs/``: every config, ``logging.conf`` and a real ``metadata.json`` (not the repository's
  link);
- ``models/``: the model registry (``models/registry.json``) and every file it lists (the shipped
  weights, baselines and the X-ray reference histogram);
- ``duolift_bundle/``: the code the configs import, with its embedded sample (the zoo puts the
  bundle folder on ``sys.path``; nothing is pip-installed there);
- ``docs/README.md``: the model card with the zoo template's sections (Authors, Tags, System
  Configuration, ...), the reference guide ``docs/guide.md``, ``docs/data_license.txt``, the
  figures the card shows, ``LICENSE``;
- ``ci/unit_tests/test_<name>.py``: a unit test in the zoo's style.

The copy is written into a temporary folder beside ``DIR`` and renamed at the end, so an
interrupted export leaves nothing half-written.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import fire
from duolift_bundle.errors import MissingFileError, install_last_line_hook
from duolift_bundle.io_utils import atomic_dir, read_json
from duolift_bundle.registry import REGISTRY, load_registry

ROOT = Path(__file__).resolve().parents[1]
NAME = "duolift_ct_reconstruction"

ZOO_SECTIONS = """
## Authors

{authors}

## Tags

{tags}

## System Configuration

The shipped models run on a CPU: inference of one case takes seconds on 2 cores (PyTorch
{pytorch}, MONAI {monai}). Training the paper's 128^3 model needs a GPU; the shipped 64^3 models
were trained on one lent H200 (model card, "Shipped models"). The MONAI bundle commands:

```bash
python -m monai.bundle run inferring --config_file configs/inference.yaml --bundle_root .
python -m monai.bundle verify_net_in_out network_def --meta_file configs/metadata.json --config_file configs/inference.yaml
python -m monai.bundle ckpt_export network_def --filepath models/model.ts --ckpt_file models/model.pt \\
    --meta_file configs/metadata.json --config_file configs/inference.yaml
```

## License

Code and weights: {license} (`LICENSE`). The real chest CTs the models were trained on and the
embedded sample: COVID-CT-MD, CC BY 4.0 (`docs/data_license.txt`).
"""

UNIT_TEST = '''"""Unit test of the {name} bundle in the model zoo's style: its inference workflow runs on the
embedded sample and writes one reconstruction per case."""

import os
import sys
import tempfile
import unittest

import nibabel as nib
from monai.bundle import ConfigWorkflow


class TestInference(unittest.TestCase):
    def test_inference_on_the_embedded_sample(self):
        bundle_root = os.path.join(os.path.dirname(__file__), "..", "..")
        sys.path.insert(0, os.path.abspath(bundle_root))
        with tempfile.TemporaryDirectory() as out:
            workflow = ConfigWorkflow(
                config_file=os.path.join(bundle_root, "configs", "inference.yaml"),
                workflow_type="infer",
                bundle_root=os.path.abspath(bundle_root),
                output_dir=out,
                progress=False,
            )
            workflow.initialize()
            workflow.run()
            workflow.finalize()
            written = sorted(os.listdir(out))
            self.assertIn("normal001", written)
            image = nib.load(os.path.join(out, "normal001", "recon_hu.nii.gz"))
            self.assertEqual(image.shape, (64, 64, 64))


if __name__ == "__main__":
    unittest.main()
'''


def _card(meta: dict, root: Path) -> str:
    card = (root / "docs" / "README.md").read_text()
    authors = meta.get("authors", "")
    tags = ", ".join(["CT reconstruction", "X-ray", "chest", "GAN", "DRR", "3D"])
    return (
        card.rstrip("\n")
        + "\n"
        + ZOO_SECTIONS.format(
            authors=authors,
            tags=tags,
            pytorch=meta.get("pytorch_version", "?"),
            monai=meta.get("monai_version", "?"),
            license="Apache-2.0",
        )
    )


def export(out: str, name: str = NAME, bundle_root: str | Path = ROOT) -> Path:
    """Write the zoo-layout copy of the bundle at ``bundle_root`` into ``out`` (see the module
    docstring); returns its path."""
    root = Path(bundle_root).resolve()
    shipped = [REGISTRY, *load_registry(root).shipped_files()]
    missing = [f for f in shipped if not (root / f).is_file()]
    if missing:
        raise MissingFileError(f"{root / REGISTRY} lists file(s) that are not there: {', '.join(missing)}")
    target = Path(out).resolve()
    if target.exists():
        sys.exit(f"{target}: exists; give a new folder (the export never overwrites)")
    meta = read_json(root / "configs" / "metadata.json")
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    with atomic_dir(target) as tmp:
        tmp = Path(tmp)
        (tmp / "configs").mkdir()
        for path in sorted((root / "configs").iterdir()):
            if path.suffix in (".yaml", ".conf"):
                shutil.copy2(path, tmp / "configs" / path.name)
        (tmp / "configs" / "metadata.json").write_text(json.dumps(meta, indent=2, ensure_ascii=False) + "\n")
        (tmp / "models").mkdir()
        for item in shipped:
            (tmp / item).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / item, tmp / item)
        shutil.copytree(root / "duolift_bundle", tmp / "duolift_bundle", ignore=ignore)
        (tmp / "docs" / "figures").mkdir(parents=True)
        card = _card(meta, root)
        (tmp / "docs" / "README.md").write_text(card)
        shutil.copy2(root / "docs" / "data_license.txt", tmp / "docs" / "data_license.txt")
        shutil.copy2(root / "docs" / "guide.md", tmp / "docs" / "guide.md")  # the card refers to it
        for figure in sorted((root / "docs" / "figures").glob("*.png")):
            if f"figures/{figure.name}" in card:
                shutil.copy2(figure, tmp / "docs" / "figures" / figure.name)
        shutil.copy2(root / "LICENSE", tmp / "LICENSE")
        (tmp / "ci" / "unit_tests").mkdir(parents=True)
        (tmp / "ci" / "unit_tests" / f"test_{name}.py").write_text(UNIT_TEST.format(name=name))
    print(f"wrote {target} ({sum(f.stat().st_size for f in target.rglob('*') if f.is_file()) / 1e6:.1f} MB)")
    return target


if __name__ == "__main__":
    install_last_line_hook()  # the bundle's message is the last line of a failure
    fire.Fire(export, serialize=lambda result: None)
