"""Every training config combination parses, resolves its networks and fits the bundle's
workflow properties (no data needed: datasets are never instantiated here)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import ROOT
from duolift_bundle.engines.config_checks import check_overrides, check_training_settings
from duolift_bundle.errors import ConfigError
from duolift_bundle.networks import DuoLiftDiscriminator, DuoLiftGenerator
from monai.bundle import ConfigParser


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
    """The override switches the process group on; the sampler asks ignite.distributed for the
    world size and rank, which are 1 and 0 in a single process."""
    parser = parse("multi_gpu_train.yaml")
    assert parser.get_parsed_content("distributed") is True
    single = parse()
    assert (
        single.get_parsed_content("train#sampler#num_replicas") == 1
        and single.get_parsed_content("train#sampler#rank") == 0
    )


def test_paper_recipe_reaches_the_objects():
    """train.yaml's defaults are the paper's recipe as the built objects see it (optimizers,
    scheduler, losses, trainer, network), not as YAML text."""
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.yaml"))
    parser.update({"bundle_root": str(ROOT), "width": 0.0625})  # small widths; every other default stays
    g_opt, d_opt = parser.get_parsed_content("train#g_optimizer"), parser.get_parsed_content("train#d_optimizer")
    assert g_opt.param_groups[0]["lr"] == d_opt.param_groups[0]["lr"] == 1e-4
    sched = parser.get_parsed_content("train#g_scheduler")
    assert dict(sched.milestones) == {70: 1} and sched.gamma == 0.1
    loss = parser.get_parsed_content("train#g_loss")
    assert (loss.alpha, loss.beta, loss.masked) == (1.0, 0.01, True)
    net = parser.get_parsed_content("network")
    assert (net.volume_size, net.image_size, net.dropout.p) == (128, 128, 0.25)
    assert parser.get_parsed_content("max_epochs") == 100 and parser.get_parsed_content("accumulation_steps") == 4
    assert parser.get_parsed_content("batch_size") == 1


# the settings that train.yaml and inference.yaml both hold (each standalone); they must agree
SHARED_IDS = ["views", "size", "width", "lift", "dual_branch", "dropout", "protocol", "network_def"]


@pytest.mark.parametrize(
    "train_files, infer_files",
    [
        (["train.yaml", "train_real.yaml"], ["inference.yaml"]),  # the shipped double-view model (inference's default)
        (["train.yaml"], ["inference.yaml", "paper.yaml"]),  # the paper's network (training's default)
        (
            ["train.yaml", "train_real.yaml", "train_real_single_view.yaml"],
            ["inference.yaml", "inference_single_view.yaml"],
        ),
    ],
)
def test_train_and_inference_agree_on_the_model_and_protocol(train_files, infer_files):
    train, infer = ConfigParser(), ConfigParser()
    train.read_config([str(ROOT / "configs" / f) for f in train_files])
    infer.read_config([str(ROOT / "configs" / f) for f in infer_files])
    for key in SHARED_IDS:
        assert train[key] == infer[key], f"{train_files} and {infer_files} disagree on {key!r}"
    for parser in (train, infer):
        parser["bundle_root"] = str(ROOT)
    assert train.get_parsed_content("protocol") == infer.get_parsed_content("protocol")


def _parse(files: list[str], **overrides) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / f) for f in files])
    parser.update({"bundle_root": str(ROOT), **overrides})
    return parser


@pytest.mark.parametrize(
    "files",
    [["train.yaml"], ["train.yaml", "train_cnn.yaml"], ["inference.yaml"], ["inference.yaml", "evaluate.yaml"]],
)
def test_size_and_width_given_once_reach_network_drr_and_writer(files, tmp_path):
    """`--size 64 --width 0.125` set once: the generator is built at 64^3 from 64 x 64 X-rays with
    1/8 widths, the DRRs (of the data route, of the projection consistency) are 64 px with 5 mm
    voxels, and a written reconstruction has 5 mm voxels spanning the protocol's 320 mm."""
    from duolift_bundle.networks import DuoLiftGenerator
    from duolift_bundle.transforms.save import SaveReconstructiond, ToReferenceGeometryd
    from monai.data import MetaTensor

    parser = _parse(
        files,
        size=64,
        width=0.125,
        output_dir=str(tmp_path),
        lpips=False,
        lung_segmenter="classical",
        vessel_segmenter="frangi",
    )
    net = parser.get_parsed_content("network_def")
    assert (net.volume_size, net.image_size) == (64, 64)
    assert sum(p.numel() for p in net.parameters()) == sum(
        p.numel() for p in DuoLiftGenerator(image_size=64, volume_size=64, width=0.125).parameters()
    )
    protocol = parser.get_parsed_content("protocol")
    assert (protocol.size, protocol.xray_size, protocol.ct.voxel_mm, protocol.ct.fov_mm) == (64, 64, 5.0, 320.0)
    if "train.yaml" in files:  # the protocol object handed to the data route
        assert parser.get_parsed_content("dataset_args")["protocol"] is protocol
        return
    transforms = parser.get_parsed_content("postprocessing").transforms
    placed = next(t for t in transforms if isinstance(t, ToReferenceGeometryd))
    item = placed({"case": "c", "pred": torch.zeros(1, 64, 64, 64)})
    assert isinstance(item["pred"], MetaTensor)
    writer = next((t for t in transforms if isinstance(t, SaveReconstructiond)), None) or SaveReconstructiond(
        output_dir=str(tmp_path)
    )
    import nibabel as nib

    written = writer(item)["written"][0]
    np.testing.assert_allclose(np.linalg.norm(nib.load(written).affine[:3, :3], axis=0), 5.0)
    if files == ["inference.yaml"]:
        consistency = transforms[0]
        assert consistency.projector.geometry.output_size == 64 and consistency.projector.spacing == (5.0,) * 3
        assert parser.get_parsed_content("preprocessing").protocol is protocol
    else:
        from duolift_bundle.transforms.evaluation import AnatomicalDiced

        dice = next(t for t in transforms if isinstance(t, AnatomicalDiced))
        assert dice.spacing == (5.0, 5.0, 5.0)


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
        (
            "inference.yaml",
            "inferring",
            [
                "network_def",
                "inferer",
                "preprocessing",
                "postprocessing",
                "dataset",
                "evaluator",
                "output_dir",
                "ckpt_path",
            ],
        ),
        (
            "evaluate.yaml",
            "evaluating",
            ["network_def", "inferer", "postprocessing", "dataset", "evaluator", "output_dir", "ckpt_path"],
        ),
        (
            "train.yaml",
            "training",
            [
                "bundle_root",
                "device",
                "dataset_dir",
                "ckpt_dir",
                "output_dir",
                "train#trainer",
                "train#dataset",
                "train#handlers",
                "train#inferer",
                "validate#evaluator",
                "validate#handlers",
            ],
        ),
    ],
)
def test_bundle_configs_define_the_monai_ids(config, run_id, ids):
    parser = ConfigParser()
    parser.read_config(
        [str(ROOT / "configs" / f) for f in (["inference.yaml"] if config == "evaluate.yaml" else []) + [config]]
    )
    for key in ids + ["initialize", "run", "finalize", run_id]:
        assert key in parser, f"{config} lacks {key}"
    parser.update({"width": 0.0625, "size": 32, "bundle_root": str(ROOT)})
    assert isinstance(parser.get_parsed_content("network_def"), DuoLiftGenerator)


def test_train_config_reads_x2ct_hdf5_folders(tmp_path):
    """data_format x2ct: the training / validation datasets come from X2CT-GAN's HDF5 layout,
    split by names files like their train.txt."""
    import nibabel as nib
    from duolift_bundle.inputs.x2ct_h5 import write_x2ct_h5
    from duolift_bundle.synthetic.phantoms import make_phantom_set

    make_phantom_set(tmp_path / "prepared", n=3, size=32, seed=60, progress=False)
    for case in ("phantom_0060", "phantom_0061", "phantom_0062"):  # X2CT's layout of the prepared cases
        folder = tmp_path / "prepared" / case
        ct = nib.load(folder / "ct.nii.gz").get_fdata()
        xray = np.stack([nib.load(folder / f"xray_{v}.nii.gz").get_fdata() for v in ("frontal", "lateral")])
        write_x2ct_h5(tmp_path / "x2ct" / case / "ct_xray_data.h5", ct, xray)
    (tmp_path / "train.txt").write_text("phantom_0060\nphantom_0061\n")
    (tmp_path / "val.txt").write_text("phantom_0062\n")
    parser = parse(
        data_format="x2ct",
        x2ct_root=str(tmp_path / "x2ct"),
        x2ct_train_names=str(tmp_path / "train.txt"),
        x2ct_val_names=str(tmp_path / "val.txt"),
    )
    train, val = parser.get_parsed_content("train#dataset"), parser.get_parsed_content("validate#dataset")
    assert len(train) == 2 and len(val) == 1
    item = train[0]
    assert tuple(item["ct"].shape) == (1, 32, 32, 32) and tuple(item["xray"].shape) == (2, 32, 32)
    assert tuple(item["lung_mask"].shape) == (1, 32, 32, 32)


#: ``--protocol#hu_window "[-1000, 1500]"``: a window other than X2CT's [-1024, 1476]
WINDOW = [-1000.0, 1500.0]


def _window_hu(unit: float) -> float:
    """The test's own reference of that window: HU = unit * 2500 - 1000."""
    return unit * 2500.0 - 1000.0


def test_one_hu_window_reaches_every_consumer(tmp_path):
    """`--protocol#hu_window "[-1000, 1500]"` set once reaches the DRRs, the lung mask, the writer,
    the DICE, the bone loss and the HDF5 route: each maps HU with that window (checked on what it
    computes, against the window's own arithmetic, where the default window would differ)."""
    import h5py
    import nibabel as nib
    from duolift_bundle.datasets.raw_chain import raw_ct_chain
    from duolift_bundle.imaging.lung_mask import LungMaskd
    from duolift_bundle.transforms.drr import DRRd, hu_to_mu
    from duolift_bundle.transforms.evaluation import AnatomicalDiced
    from duolift_bundle.transforms.save import SaveReconstructiond
    from monai.data import MetaTensor

    override = {"protocol#hu_window": WINDOW}
    # bone loss: the bone threshold (150 HU) on the window's [0, 1] scale
    train = parse(**override)
    assert train.get_parsed_content("train#g_loss").bone_level == pytest.approx((150.0 + 1000.0) / 2500.0)
    # HDF5 route: X2CT's stored HU + 1024 mapped with the window (0 HU -> 0.4; X2CT's window: 0.4096)
    case = tmp_path / "x2ct" / "A"
    case.mkdir(parents=True)
    with h5py.File(case / "ct_xray_data.h5", "w") as f:
        f["ct"] = np.full((16, 16, 16), 1024.0, np.float32)
        f["xray1"] = f["xray2"] = np.full((16, 16), 128, np.uint8)
    train.update({"data_format": "x2ct", "x2ct_root": str(tmp_path / "x2ct"), "x2ct_train_names": None})
    dataset = train.get_parsed_content("train#dataset")
    np.testing.assert_allclose(dataset[0]["ct"].numpy(), 0.4, atol=1e-6)
    # lung mask (HDF5 and raw routes) and DRRs (raw route): the protocol object the config built
    protocol = train.get_parsed_content("protocol")
    masks = [t for t in dataset.transform.transforms if isinstance(t, LungMaskd)]
    masks += [t for t in raw_ct_chain(protocol).transforms if isinstance(t, LungMaskd)]
    assert len(masks) == 2 and all(m.protocol.to_hu(0.5) == pytest.approx(_window_hu(0.5)) for m in masks)
    (drr,) = [t for t in raw_ct_chain(protocol).transforms if isinstance(t, DRRd)]
    bright = torch.ones(1, 1, 4, 4, 4)
    assert torch.allclose(drr.projector.attenuation(bright), hu_to_mu(torch.full_like(bright, _window_hu(1.0))))
    # writer and DICE (evaluate.yaml's post-processing on inference.yaml's)
    evaluate = _parse(
        ["inference.yaml", "evaluate.yaml"], output_dir=str(tmp_path / "eval"), size=64, lung_segmenter="classical",
        vessel_segmenter="frangi", lpips=False, save_recon=True, **override,
    )  # fmt: skip
    transforms = evaluate.get_parsed_content("postprocessing").transforms
    (writer,) = [t for t in transforms if isinstance(t, SaveReconstructiond)]
    (dice,) = [t for t in transforms if isinstance(t, AnatomicalDiced)]
    item = {
        "case": "c",
        "pred": MetaTensor(torch.full((1, 8, 8, 8), 0.5), affine=torch.eye(4)),
        "ct": torch.zeros(1, 8, 8, 8),
    }
    written = writer(item)["written"][0]
    np.testing.assert_allclose(nib.load(written).get_fdata(), _window_hu(0.5), atol=1e-3)
    seen = []

    class Recorder:
        name = "recorder"

        def __call__(self, hu, spacing):
            seen.append(float(np.asarray(hu).mean()))
            return np.asarray(hu) > 0

    dice.lung = dice.vessel = Recorder()
    dice(item)
    assert seen == pytest.approx([_window_hu(0.5), _window_hu(0.0)] * 2)


def test_an_evaluation_of_an_empty_split_stops_naming_it(tmp_path):
    """evaluate.yaml checks its dataset before the run (MONAI's evaluator would skip it and exit 0):
    an empty split is a ConfigError naming the source and the split and saying how to take all."""
    from duolift_bundle.engines import check_evaluation_set

    with pytest.raises(ConfigError, match=r"data/x/datalist.json: the 'test' split holds no case.*--split all"):
        check_evaluation_set([], "data/x/datalist.json", "test")
    assert check_evaluation_set([{"case": "a"}], "data/x/datalist.json", "test")
    evaluate = _parse(["inference.yaml", "evaluate.yaml"], output_dir=str(tmp_path))
    assert any("check_evaluation_set(@dataset" in step for step in evaluate["initialize"])
