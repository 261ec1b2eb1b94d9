"""DuoLift generator, discriminator and X2CT baseline: shapes, orientation, gradients, bad input."""

from __future__ import annotations

import pytest
import torch
from duolift_bundle.networks import DuoLiftDiscriminator, DuoLiftGenerator, X2CTGenerator, discriminator_output_size
from duolift_bundle.networks.blocks import InstanceNorm3dCL, Lifting, lift_repeat
from monai.networks.layers.factories import Norm

# Small generators for CPU tests: same code as the paper configuration, reduced widths/depth.
SMALL = dict(image_size=32, volume_size=32, width=1 / 16, encoder_blocks=(1, 1, 1, 1))


def paper_shapes(views: int, size: int, dual_branch: bool, image_size: int = 128) -> dict[str, tuple[int, ...]]:
    """The tensor shapes the paper's "Generator Architecture" section names, for batch 1."""
    q, h = size // 4, size // 2
    shapes: dict[str, tuple[int, ...]] = {
        "F_B": (1, 512 * views, q, q, q),
        "f_u21": (1, 256, q, q, q),
        "f_u22": (1, 128, h, h, h),
        "f_u23": (1, 64, size, size, size),
        "f_u11": (1, 64, size, size, size),
        "f_u12": (1, 64, size, size, size),
        "F_u": (1, 224 if dual_branch else 192, size, size, size),
        "R_v": (1, 1, size, size, size),
    }
    for i in range(1, 5):
        shapes[f"head_{i}"] = (1, 32, size, size, size)
    shapes["F2D_0"] = (1, 512, q, q)  # H/4 x W/4 of the X-ray, resized to D'/4 when they differ
    shapes["F3D_0"] = (1, 512, q, q, q)
    if views == 2:
        shapes["F2D_1"] = (1, 512, q, q)
        shapes["F3D_1"] = (1, 512, q, q, q)
    if dual_branch:
        shapes["F_o"] = (1, 32, size, size, size)
        for v in range(views):
            shapes[f"I3D_{v}"] = (1, 1, size, size, size)
    return shapes


@pytest.mark.parametrize(
    "views, size, lift, dual_branch",
    [
        (2, 128, "repeat", True),  # DuoLift, double view (paper)
        (1, 128, "repeat", True),  # DuoLift, single view (paper)
        (2, 128, "conv", True),  # Table 4, row 2
        (2, 128, "repeat", False),  # Table 4, row 3
        (2, 128, "backproject", True),  # along the DRR rays (issue 23)
        (1, 128, "backproject", True),
        (2, 64, "repeat", True),
        (2, 256, "repeat", True),
    ],
)
def test_paper_configuration_shapes_on_meta(views, size, lift, dual_branch):
    with torch.device("meta"):
        net = DuoLiftGenerator(views=views, volume_size=size, lift=lift, dual_branch=dual_branch).eval()
    record = net.intermediates(torch.zeros(1, views, 128, 128, device="meta"))
    expected = paper_shapes(views, size, dual_branch)
    assert set(record) == set(expected)
    for name, shape in expected.items():
        assert tuple(record[name].shape) == shape, name


def test_paper_parameter_counts():
    with torch.device("meta"):
        double = DuoLiftGenerator()
        single = DuoLiftGenerator(views=1)
        conv = DuoLiftGenerator(lift="conv")
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    encoder = sum(p.numel() for p in double.encoders[0].parameters())
    # ResNet-34's four stages at (64, 128, 256, 512) plus a 1-channel stem: ~21.3 M like torchvision's
    assert 21.0e6 < encoder < 21.6e6
    assert n(double) - n(single) > encoder  # one more encoder, wider F_B
    # conv lifting: 512 -> 512 * 32 (1x1) per view, plus 1 -> 128 (3x3) per view
    assert n(conv) - n(double) == 2 * (512 * 512 * 32 + 512 * 32) + 2 * (128 * 9 + 128)
    assert double.fu_channels == 224


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"views": 1}, {"lift": "conv"}, {"lift": "backproject"}, {"dual_branch": False}, {"volume_size": 64}],
)
def test_small_forward_backward_every_parameter_learns(kwargs):
    torch.manual_seed(0)
    net = DuoLiftGenerator(**{**SMALL, **kwargs})
    x = torch.rand(2, net.views, 32, 32)
    pred, aux = net.forward_with_aux(x)
    size = net.volume_size
    assert pred.shape == (2, 1, size, size, size)
    assert len(aux) == 4 and all(a.shape == pred.shape for a in aux)
    assert 0.0 <= float(pred.min()) and float(pred.max()) <= 1.0
    (pred.mean() + sum(a.mean() for a in aux)).backward()
    missing = [name for name, p in net.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    net.eval()
    assert net.forward_with_aux(x)[1] == []


@pytest.mark.parametrize("channels_last", [True, False])
def test_inference_path_equals_autograd_path(channels_last):
    """The memory-saving no-grad path (preallocated F_u, U-Net++ skip buffer, running head mean)
    computes the same function as the plain path used with autograd."""
    torch.manual_seed(1)
    net = DuoLiftGenerator(**SMALL, channels_last=channels_last).eval()
    x = torch.rand(1, 2, 32, 32)
    with torch.no_grad():
        fast = net(x)
    plain = net(x).detach()
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
    record = net.intermediates(x)
    torch.testing.assert_close(record["R_v"].detach(), plain, rtol=1e-5, atol=1e-6)


def test_channels_last_layout_does_not_change_results():
    torch.manual_seed(2)
    a = DuoLiftGenerator(**SMALL, channels_last=True).eval()
    b = DuoLiftGenerator(**SMALL, channels_last=False).eval()
    b.load_state_dict(a.state_dict())
    x = torch.rand(1, 2, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("layout", [torch.channels_last_3d, torch.contiguous_format])
def test_instance_norm_cl_matches_pytorch_and_keeps_layout(grad, layout):
    """With autograd (torch.var_mean) and without (channel_var_mean, in place), against PyTorch's
    own instance norm in float64, on data whose mean is 6 standard deviations (single-pass
    statistics would lose about 1e-3 there), with more voxels than one block of statistics."""
    torch.manual_seed(3)
    ref = torch.nn.InstanceNorm3d(6, affine=True)
    torch.nn.init.normal_(ref.weight)
    torch.nn.init.normal_(ref.bias)
    ours = InstanceNorm3dCL(6)
    ours.load_state_dict(ref.state_dict())
    x = (torch.randn(2, 6, 40, 41, 42) * 0.5 + 3).contiguous(memory_format=layout)
    expected = ref.double()(x.double()).float()
    with torch.set_grad_enabled(grad):
        y = ours(x.clone())
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=2e-5)
    assert y.is_contiguous(memory_format=layout)
    assert "INSTANCE_CL" in Norm.names
    with pytest.raises(ValueError, match="affine"):
        InstanceNorm3dCL(4, affine=False)


def test_instance_norm_cl_on_a_strided_view_leaves_its_base_alone():
    """A view that is neither layout's dense tensor is normalised out of place: the result is
    right and the tensor it views is not written."""
    torch.manual_seed(5)
    norm = InstanceNorm3dCL(3)
    base = torch.randn(1, 3, 16, 16, 16)
    kept = base.clone()
    view = base[:, :, ::2]
    with torch.no_grad():
        y = norm(view)
        expected = torch.nn.functional.instance_norm(view.contiguous(), weight=norm.weight, bias=norm.bias)
    torch.testing.assert_close(y, expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(base, kept)


def test_instance_norm_cl_keeps_bfloat16_with_float32_statistics():
    """Under CPU autocast a convolution hands bfloat16 to the norm: the output stays bfloat16 (no
    conversion copies) and equals the float32 norm of the same values to bfloat16's precision."""
    torch.manual_seed(4)
    norm = InstanceNorm3dCL(8)
    torch.nn.init.normal_(norm.weight)
    x = (torch.randn(1, 8, 24, 24, 24) + 5).to(torch.bfloat16).contiguous(memory_format=torch.channels_last_3d)
    with torch.no_grad():
        y = norm(x.clone())
        expected = norm(x.float())
    assert y.dtype == torch.bfloat16 and y.is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(y.float(), expected, rtol=2e-2, atol=2e-2)


def test_lifting_directions_follow_the_axis_convention():
    """Frontal maps (rows D, cols W) repeat along H; lateral maps (rows D, cols H) along W."""
    f = torch.zeros(1, 1, 4, 4)
    f[0, 0, 1, 3] = 1.0  # superior-ish row 1, column 3 (towards patient left)
    frontal = lift_repeat(f, 0, 5)
    assert frontal.shape == (1, 1, 4, 5, 4)
    assert torch.equal(torch.nonzero(frontal[0, 0])[:, [0, 2]].unique(dim=0), torch.tensor([[1, 3]]))
    lateral = lift_repeat(f, 1, 5)
    assert lateral.shape == (1, 1, 4, 4, 5)
    assert torch.equal(torch.nonzero(lateral[0, 0])[:, [0, 1]].unique(dim=0), torch.tensor([[1, 3]]))
    conv = Lifting(1, 5, view=1, mode="conv", kernel_size=3)
    assert conv(f).shape == (1, 1, 4, 4, 5)


def test_lifted_drrs_intersect_at_the_ball(phantom_ball):
    """A dense ball in one octant: its two DRRs, lifted by the generator's Lifting module, meet at
    the ball's voxel position (DRR views and lifting share one axis convention)."""
    volume, centre, xray = phantom_ball
    n = volume.shape[-1]
    lifted = [Lifting(1, n, v)(xray[:, v : v + 1])[0, 0] for v in range(2)]
    both = lifted[0] * lifted[1]
    # centroid of the top of the product (a voxelised ball has a flat top: argmax would pick its edge)
    peak = torch.nonzero(both >= 0.9 * both.max()).float().mean(0)
    assert torch.all((peak - torch.tensor(centre)).abs() <= 1.0), (peak, centre)


@pytest.mark.parametrize("lift, lands", [("backproject", True), ("repeat", False)])
def test_cone_beam_drrs_meet_at_the_ball_only_when_lifted_along_the_rays(lift, lands):
    """X2CT's cone beam: the two DRRs of a ball near the posterior, right, superior corner
    (magnification ~2.1 in both views, ~100 mm off both central rays), lifted along the
    projector's rays, meet at the ball; repeated as if the beam were parallel (the paper's
    lifting, right only near the isocentre's magnification of 1.75), they meet voxels away."""
    from duolift_bundle.geometry import Protocol
    from duolift_bundle.transforms.drr import DRRProjector

    protocol = Protocol.build(size=64)
    idx = torch.arange(64, dtype=torch.float32)
    z, y, x = torch.meshgrid(idx, idx, idx, indexing="ij")
    centre = torch.tensor([14.0, 50.0, 14.0])  # D superior, H posterior, W patient right
    ball = (z - centre[0]) ** 2 + (y - centre[1]) ** 2 + (x - centre[2]) ** 2 <= 9.0
    vol = torch.where(ball, 1000.0, -1024.0)[None, None]
    xray = DRRProjector(protocol, input_range="hu")(vol)
    rays = {"geometry": protocol.drr.geometry, "fov_mm": protocol.ct.fov_mm}
    lifted = [Lifting(1, 64, v, mode=lift, **rays)(xray[:, v : v + 1])[0, 0] for v in range(2)]
    both = lifted[0] * lifted[1]
    peak = torch.nonzero(both >= 0.9 * both.max()).float().mean(0)
    error = float((peak - centre).abs().max())
    assert (error <= 1.0) if lands else (error > 4.0), (lift, peak.tolist(), centre.tolist())


@pytest.fixture(scope="module")
def phantom_ball():
    from duolift_bundle.geometry import Protocol
    from duolift_bundle.synthetic.phantoms import asymmetric_ball_phantom
    from duolift_bundle.transforms.drr import DRRProjector

    ph = asymmetric_ball_phantom(size=64)
    ball = torch.from_numpy(ph.hu > 500)  # the dense ball only: the body would dominate the product
    vol = torch.where(ball, 1000.0, -1024.0)[None, None]  # HU: air around the ball
    centre = torch.nonzero(ball).float().mean(0).tolist()
    parallel = Protocol.build(size=64, sad=None, detector_size=320.0, detector_pixels=64)  # 5 mm voxels
    xray = DRRProjector(parallel, input_range="hu")(vol)
    return vol, centre, xray


@pytest.mark.parametrize(
    "shape, message",
    [
        ((1, 3, 32, 32), "expected 2 view"),
        ((1, 1, 32, 32), "expected 2 view"),
        ((2, 32, 32), "3D tensor"),
        ((1, 2, 32, 32, 1), "5D tensor"),
        ((1, 2, 32, 16), "square 32x32"),
        ((1, 2, 64, 64), "square 32x32"),
    ],
)
def test_generator_rejects_bad_shapes(shape, message):
    net = DuoLiftGenerator(**SMALL)
    with pytest.raises(ValueError, match=message) as err:
        net(torch.rand(*shape))
    assert str(list(shape)) in str(err.value)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_generator_rejects_non_finite(bad):
    x = torch.rand(1, 2, 32, 32)
    x[0, 1, 3, 4] = bad
    for net in (
        DuoLiftGenerator(**SMALL),
        X2CTGenerator(image_size=32, encoder_channels=(8, 8, 8), decoder_channels=(8, 8, 8, 4)),
    ):
        with pytest.raises(ValueError, match="NaN or Inf"):
            net(x)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"views": 3}, "views must be 1"),
        ({"volume_size": 100}, "multiple of 16"),
        ({"image_size": 30}, "multiple of 4"),
        ({"lift": "mlp"}, "lift must be"),
        ({"dropout": 1.0}, "dropout"),
        ({"branch1_channels": (8, 8)}, "three values"),
    ],
)
def test_generator_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DuoLiftGenerator(**{**SMALL, **kwargs})


@pytest.mark.parametrize("size, expected", [(128, 5), (64, 3), (256, 9), (32, 2)])
def test_discriminator_output_size(size, expected):
    assert discriminator_output_size(size) == expected
    with torch.device("meta"):
        d = DuoLiftDiscriminator()
        assert d(torch.zeros(1, 1, size, size, size)).shape == (1, 1, expected, expected, expected)


def test_discriminator_layers_are_the_papers():
    d = DuoLiftDiscriminator()
    convs = [m for m in d.modules() if isinstance(m, torch.nn.Conv3d)]
    pools = [m for m in d.modules() if isinstance(m, torch.nn.AvgPool3d)]
    assert len(convs) == 4 and all(
        c.kernel_size == (4, 4, 4) and c.stride == (1, 1, 1) and c.padding == (2, 2, 2) for c in convs
    )
    assert len(pools) == 5 and all(p.kernel_size == 3 and p.stride == 2 and p.padding == 1 for p in pools)


def test_discriminator_conditioning_and_masking():
    torch.manual_seed(4)
    vol = torch.rand(2, 1, 32, 32, 32)
    mask = (torch.rand(2, 1, 32, 32, 32) > 0.5).to(torch.uint8)
    xray = torch.rand(2, 2, 32, 32)
    plain = DuoLiftDiscriminator(width=1 / 16)
    masked = DuoLiftDiscriminator(width=1 / 16, masked_input=True)
    masked.load_state_dict(plain.state_dict())
    torch.testing.assert_close(masked(vol, mask=mask), plain(vol * mask))
    cond = DuoLiftDiscriminator(width=1 / 16, condition_views=2)
    assert cond.model[0].in_channels == 3
    out = cond(vol, xray)
    assert out.shape == (2, 1, 2, 2, 2)
    # the X-rays matter: changing them changes the logits
    assert not torch.allclose(out, cond(vol, torch.rand(2, 2, 32, 32)))
    with pytest.raises(ValueError, match="pass the lung mask"):
        masked(vol)
    with pytest.raises(ValueError, match="conditioned on 2"):
        cond(vol)
    with pytest.raises(ValueError, match=r"expected X-rays of shape \(2, 2, H, W\)"):
        cond(vol, xray[:, :1])
    with pytest.raises(ValueError, match=r"\(B, 1, D, H, W\)"):
        plain(vol[:, 0])


@pytest.mark.parametrize("views", [1, 2])
def test_x2ct_baseline_small(views):
    torch.manual_seed(5)
    net = X2CTGenerator(
        views=views,
        image_size=32,
        stem_channels=4,
        encoder_channels=(8, 8, 8),
        decoder_channels=(8, 8, 8, 4),
        growth=4,
        dense_layers=2,
    )
    x = torch.rand(2, views, 32, 32)
    y = net(x)
    assert y.shape == (2, 1, 32, 32, 32) and 0.0 <= float(y.min()) and float(y.max()) <= 1.0
    y.mean().backward()
    assert all(p.grad is not None for p in net.parameters())
    with pytest.raises(ValueError, match=f"expected {views} view"):
        net(torch.rand(1, 3, 32, 32))


def test_x2ct_baseline_paper_size_on_meta():
    with torch.device("meta"):
        net = X2CTGenerator()
        assert net(torch.zeros(1, 2, 128, 128)).shape == (1, 1, 128, 128, 128)
    with pytest.raises(ValueError, match="power of two"):
        X2CTGenerator(image_size=96)
    with pytest.raises(ValueError, match="needs 3 encoder_channels"):
        X2CTGenerator(image_size=32)


@pytest.mark.slow
def test_small_generator_overfits_one_phantom():
    """The network can learn: a reduced-width DuoLift generator (32^3) fits one phantom case from
    its two DRRs to PSNR > 22 dB, 7.6 dB above the best constant volume (its mean: 14.4 dB); about
    80 Adam steps at lr 1e-2, ~40 s on 2 CPU cores (30 dB takes ~400 steps at 3e-3: minutes)."""
    from conftest import hu_to_unit
    from duolift_bundle.geometry import Protocol
    from duolift_bundle.synthetic.phantoms import make_phantom
    from duolift_bundle.transforms.drr import DRRProjector

    torch.manual_seed(0)
    n = 32
    ct = torch.from_numpy(hu_to_unit(make_phantom(seed=3, size=n).hu)).clamp(0, 1)[None, None].float()
    xray = DRRProjector(Protocol.build(size=n))(ct)
    constant = float(10 * torch.log10(1.0 / (ct - ct.mean()).square().mean()))
    # batch of two copies: at this tiny size PyTorch only takes the oneDNN convolution path for
    # batch > 1 (3x faster per step than its batch-1 fallback here)
    ct, xray = ct.repeat(2, 1, 1, 1, 1), xray.repeat(2, 1, 1, 1)
    net = DuoLiftGenerator(image_size=n, volume_size=n, width=0.125, dropout=0.0, encoder_blocks=(1, 1, 1, 1))
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    psnr = 0.0
    for _ in range(300):
        loss = torch.nn.functional.mse_loss(net(xray), ct)
        opt.zero_grad()
        loss.backward()
        opt.step()
        psnr = float(10 * torch.log10(1.0 / loss.detach()))
        if psnr > 23.0:
            break
    net.eval()
    with torch.no_grad():
        final = float(10 * torch.log10(1.0 / torch.nn.functional.mse_loss(net(xray), ct)))
    assert final > 22.0 and final > constant + 6.0, (constant, psnr, final)


@pytest.mark.parametrize("grad", [False, True])
def test_unetpp_heads_equal_monai_basic_unetplusplus(grad):
    """forward_heads (input freed early; without autograd no full-resolution concatenation, each
    block's first convolution summed over its inputs' channel blocks) computes MONAI's
    BasicUNetPlusPlus.forward with deep supervision, on the same weights (to float32 rounding:
    the summed convolutions add in another order); so does forward_heads_on_parts with the input
    in shuffled blocks, one made on demand."""
    from duolift_bundle.networks.blocks import ACT_3D, NORM_3D
    from duolift_bundle.networks.unetpp import InputPart, UNetPlusPlusHeads
    from monai.networks.nets import BasicUNetPlusPlus

    torch.manual_seed(0)
    features = (4, 4, 8, 8, 16, 4)
    ours = UNetPlusPlusHeads(3, 5, 2, features, act=ACT_3D, norm=NORM_3D).eval()
    reference = BasicUNetPlusPlus(
        spatial_dims=3,
        in_channels=5,
        out_channels=2,
        features=features,
        deep_supervision=True,
        act=ACT_3D,
        norm=NORM_3D,
    ).eval()
    reference.load_state_dict(ours.state_dict())
    x = torch.rand(2, 5, 16, 16, 16)
    with torch.set_grad_enabled(grad):
        heads = ours.forward_heads([x.clone()])
        mean = ours.forward_heads([x.clone()], average=True)[0]
        expected = reference(x)
    assert len(heads) == len(expected) == 4
    for a, b in zip(heads, expected):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(mean, sum(expected) / 4, rtol=1e-5, atol=1e-5)
    if not grad:
        with torch.no_grad():
            parts = [InputPart(3, x[:, 3:].clone()), InputPart(0, lambda: x[:, :3].clone())]
            on_parts = ours.forward_heads_on_parts(parts, average=True)[0]
        assert parts == []
        torch.testing.assert_close(on_parts, sum(expected) / 4, rtol=1e-5, atol=1e-5)
        with torch.no_grad(), pytest.raises(ValueError, match="channels"):
            ours.forward_heads_on_parts([InputPart(0, x[:, :3])])
