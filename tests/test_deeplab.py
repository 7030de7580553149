import pytest
import torch

from helpers import models, pretrained


@pytest.mark.parametrize("output_stride", [16, 8])
def test_deeplab_builds_with_offline_imagenet_weights(output_stride):
    model = models.build_model("deeplabv3plus-effnet-lite0", 11, output_stride=output_stride).eval()
    weights = pretrained.efficientnet_lite_state_dict("lite0")
    # smp's timm adapter keeps the timm network under "model."; every tensor it uses is ImageNet's.
    encoder_state = {k.removeprefix("model."): v for k, v in model.net.encoder.state_dict().items()}
    assert len(encoder_state) > 200
    assert all(torch.equal(v, weights[k]) for k, v in encoder_state.items())
    images = torch.rand(1, 3, 96, 128)
    with torch.no_grad():
        logits = model(images)
        deepest = model.net.encoder((images - model.mean) / model.std)[-1]
    assert logits.shape == (1, 11, 96, 128)
    # Atrous convolution keeps the deepest features at 1/output_stride of the input.
    assert deepest.shape[-2:] == (96 // output_stride, 128 // output_stride)


def test_output_strides_share_weights_and_differ_only_in_resolution():
    coarse = models.build_model("deeplabv3plus-effnet-lite0", 11, output_stride=16)
    fine = models.build_model("deeplabv3plus-effnet-lite0", 11, output_stride=8)
    fine.load_state_dict(coarse.state_dict())  # dilation changes no tensor shape
    assert models.count_parameters(coarse) == models.count_parameters(fine)
    assert models.count_flops(fine, 96, 128) > 1.5 * models.count_flops(coarse, 96, 128)
    with pytest.raises(ValueError, match="output_stride"):
        models.build_model("deeplabv3plus-effnet-lite0", 11, output_stride=32)


@pytest.mark.slow
@pytest.mark.parametrize("output_stride", [16, 8])
def test_deeplab_trains_a_smoke_profile_run(camvid_dir, tmp_path, output_stride):
    from helpers.checkpoint import load_model
    from helpers.config import load_config
    from helpers.train import fit

    config = load_config("smoke", "deeplabv3plus-effnet-lite0",
                         output_stride=output_stride)
    start = models.build_model(config.model, 11, output_stride=output_stride).state_dict()
    result = fit(config, out_dir=tmp_path, progress=False)
    assert all(torch.isfinite(torch.tensor(row["train_loss"])) for row in result.history)
    assert all(torch.isfinite(torch.tensor(row["val_loss"])) for row in result.history)
    model, info = load_model(result.best_checkpoint)
    assert info["config"].output_stride == output_stride
    trained = model.state_dict()
    changed = [k for k in start if k.endswith("weight") and not torch.equal(start[k], trained[k])]
    assert any(k.startswith("net.encoder.") for k in changed)
    assert any(k.startswith("net.decoder.") for k in changed)
    with torch.no_grad():
        deepest = model.net.encoder(torch.zeros(1, 3, 64, 96))[-1]
    assert deepest.shape[-2:] == (64 // output_stride, 96 // output_stride)
