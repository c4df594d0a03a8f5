import pytest
import torch

from medseg_weak.classify.backbones import create_backbone, load_weights
from medseg_weak.classify.model import Classifier
from medseg_weak.errors import ConfigError, InputError


@pytest.mark.parametrize("name", ["tiny_cnn", "resnet18", "smp:resnet18"])
@pytest.mark.parametrize("channels", [1, 3])
def test_backbone_contract(name, channels):
    model = Classifier.create(name, channels, num_classes=4)
    x = torch.rand(2, channels, 64, 64)
    features = model.forward_features(x)
    assert features.ndim == 4 and features.shape[1] == model.backbone.num_features
    logits = model(x)
    assert logits.shape == (2, 4) and torch.isfinite(logits).all()
    torch.testing.assert_close(model.forward_head(features), logits)
    seen = {}
    handle = model.cam_layer.register_forward_hook(lambda m, i, o: seen.setdefault("out", o))
    model(x)
    handle.remove()
    torch.testing.assert_close(seen["out"], features)  # the CAM layer's output IS the final feature map
    assert "final" in model.cam_layers()


def test_unknown_backbone_lists_options():
    with pytest.raises(ConfigError, match=r"unknown backbone 'resnet_nope'.*tiny_cnn"):
        create_backbone("resnet_nope")
    with pytest.raises(ConfigError, match="unknown smp encoder"):
        create_backbone("smp:nope")
    with pytest.raises(ConfigError, match="must be 1 or 3"):
        create_backbone("tiny_cnn", in_channels=2)


def test_load_weights_strips_prefixes_and_adapts_rgb_stem(tmp_path):
    source = create_backbone("resnet18", in_channels=3)
    # a Lightning-style checkpoint: {"state_dict": {"model.backbone.body.model.conv1.weight": ...}}
    state = {f"model.backbone.body.{k}": v for k, v in source.body.state_dict().items()}
    path = tmp_path / "w.ckpt"
    torch.save({"state_dict": state}, path)
    target = create_backbone("resnet18", in_channels=1)
    load_weights(target, path)
    got = target.body.state_dict()
    want = source.body.state_dict()
    torch.testing.assert_close(got["model.layer4.1.conv2.weight"], want["model.layer4.1.conv2.weight"])
    torch.testing.assert_close(got["model.conv1.weight"], want["model.conv1.weight"].sum(dim=1, keepdim=True))


def test_load_weights_plain_timm_state_dict(tmp_path):
    import timm

    source = timm.create_model("resnet18", pretrained=False, num_classes=10, in_chans=1)
    path = tmp_path / "timm.pth"
    torch.save(source.state_dict(), path)
    target = create_backbone("resnet18", in_channels=1)
    _, unexpected = load_weights(target, path)
    torch.testing.assert_close(
        target.body.state_dict()["model.layer1.0.conv1.weight"], source.layer1[0].conv1.weight
    )
    assert any("fc" in k for k in unexpected)  # the classifier head is reported, not loaded


def test_load_weights_errors(tmp_path):
    backbone = create_backbone("tiny_cnn")
    with pytest.raises(InputError, match="weights file not found"):
        load_weights(backbone, tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read weights"):
        load_weights(backbone, bad)
    other = tmp_path / "other.pt"
    torch.save({"foo.weight": torch.zeros(3)}, other)
    with pytest.raises(InputError, match="no tensor matches"):
        load_weights(backbone, other)
