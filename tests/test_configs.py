"""Every training config combination parses, resolves its networks and fits the bundle's
workflow properties (no data needed: datasets are never instantiated here)."""

from __future__ import annotations

from pathlib import Path

import pytest
from monai.bundle import ConfigParser

from duolift_bundle.engines.config_checks import ConfigError, check_overrides, check_training_settings
from duolift_bundle.networks import DuoLiftDiscriminator, DuoLiftGenerator

ROOT = Path(__file__).resolve().parents[1]


def parse(*names: str, **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / n) for n in ("train.yaml", *names)])
    parser.update({"bundle_root": str(ROOT), "width": 0.0625, "size": 32, **overrides})
    return parser


@pytest.mark.parametrize(
    "files, views, lift, dual, gan, masked_loss, d_masked",
    [
        ((), 2, "repeat", True, True, True, False),
        (("train_cnn.yaml",), 2, "repeat", True, False, False, False),
        (("train_single_view.yaml",), 1, "repeat", True, True, True, False),
        (("train_cnn.yaml", "ablation_lift_conv.yaml"), 2, "conv", True, False, False, False),
        (("train_cnn.yaml", "ablation_no_dual_branch.yaml"), 2, "repeat", False, False, False, False),
        (("ablation_no_masked_loss.yaml",), 2, "repeat", True, True, False, False),
        (("train_cnn.yaml", "ablation_cnn_masked_loss.yaml"), 2, "repeat", True, False, True, False),
        (("ablation_masked_discriminator.yaml",), 2, "repeat", True, True, False, True),
    ],
)
def test_training_config_combinations(files, views, lift, dual, gan, masked_loss, d_masked):
    parser = parse(*files)
    net = parser.get_parsed_content("network")
    assert isinstance(net, DuoLiftGenerator)
    assert (net.views, net.lift, net.dual_branch, net.volume_size) == (views, lift, dual, 32)
    assert parser.get_parsed_content("gan") is gan
    loss = parser.get_parsed_content("train#g_loss")
    assert loss.masked is masked_loss and loss.alpha == 1.0 and loss.beta == 0.01
    d = parser.get_parsed_content("discriminator")
    assert isinstance(d, DuoLiftDiscriminator) and d.masked_input is d_masked
    lr = parser.get_parsed_content("g_lr")
    assert lr == (5e-4 if not gan else 1e-4)


def test_multi_gpu_override_parses():
    parser = parse("multi_gpu_train.yaml")
    assert "init_distributed" in str(parser["initialize"])
    assert parser["train#sampler#num_replicas"].startswith("$torch.distributed")


def test_paper_defaults_in_train_yaml():
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.yaml"))
    expected = {"max_epochs": 100, "lr_milestone": 70, "g_lr": 1e-4, "d_lr": 1e-4, "batch_size": 1,
                "accumulation_steps": 4, "alpha": 1.0, "beta": 0.01, "dropout": 0.25, "size": 128, "width": 1.0}  # fmt: skip
    for key, value in expected.items():
        assert parser[key] == value, key


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"views": 0}, "views = 0"),
        ({"size": 100}, "size = 100"),
        ({"width": 0}, "width = 0"),
        ({"lr": [0.0]}, "learning rate 0.0"),
        ({"data_format": "hdf5"}, "data_format = 'hdf5'"),
    ],
)
def test_check_training_settings(kwargs, message):
    base = {"views": 2, "size": 32}
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        check_training_settings(**{**base, **kwargs})
    assert check_training_settings(**base)


def test_check_overrides_names_the_unknown_key():
    files = [str(ROOT / "configs" / "train.yaml")]
    argv = ["monai/bundle/__main__.py", "run", "training", "--max_epochs", "2", "--train#trainer#amp", "False"]
    assert check_overrides(files, argv)
    with pytest.raises(ConfigError, match="--max_epoch "):
        check_overrides(files, argv + ["--max_epoch", "3"])


@pytest.mark.parametrize(
    "config, run_id, ids",
    [
        ("inference.yaml", "inferring", ["network_def", "inferer", "preprocessing", "postprocessing", "dataset", "evaluator", "output_dir", "ckpt_path"]),
        ("evaluate.yaml", "evaluating", ["network_def", "inferer", "postprocessing", "dataset", "evaluator", "output_dir", "ckpt_path"]),
        ("train.yaml", "training", ["bundle_root", "device", "dataset_dir", "ckpt_dir", "output_dir", "train#trainer", "train#dataset", "train#handlers", "train#inferer", "validate#evaluator", "validate#handlers"]),
    ],
)
def test_bundle_configs_define_the_monai_ids(config, run_id, ids):
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / config))
    for key in ids + ["initialize", "run", "finalize", run_id]:
        assert key in parser, f"{config} lacks {key}"
    parser.update({"width": 0.0625, "size": 32, "bundle_root": str(ROOT)})
    assert isinstance(parser.get_parsed_content("network_def"), DuoLiftGenerator)


def test_train_config_reads_x2ct_hdf5_folders(tmp_path):
    """data_format x2ct: the training / validation datasets come from X2CT-GAN's HDF5 layout,
    split by names files like their train.txt."""
    from duolift_bundle.data.phantoms import make_phantom_set
    from duolift_bundle.data.prepare import PrepareOptions
    from duolift_bundle.transforms.drr import DRRGeometry

    options = PrepareOptions(lazy=True, size=32, geometry=DRRGeometry(output_size=32).to_dict(), formats=("nifti", "x2ct-h5"))
    make_phantom_set(tmp_path, n=3, size=32, seed=60, options=options, progress=False)
    (tmp_path / "train.txt").write_text("phantom_0060\nphantom_0061\n")
    (tmp_path / "val.txt").write_text("phantom_0062\n")
    parser = parse(data_format="x2ct", x2ct_root=str(tmp_path), x2ct_train_names=str(tmp_path / "train.txt"), x2ct_val_names=str(tmp_path / "val.txt"))
    train, val = parser.get_parsed_content("train#dataset"), parser.get_parsed_content("validate#dataset")
    assert len(train) == 2 and len(val) == 1
    item = train[0]
    assert tuple(item["ct"].shape) == (1, 32, 32, 32) and tuple(item["xray"].shape) == (2, 32, 32)
    assert tuple(item["lung_mask"].shape) == (1, 32, 32, 32)
