import pytest
import torch
from aefheight.core.errors import ConfigError
from aefheight.core.schema import from_mapping, make
from aefheight.models.factory import ModelSettings, build_model, load_checkpoint, save_checkpoint
from helpers import AEF


@pytest.mark.parametrize("arch", ["unet", "unetplusplus"])
class TestNets:
    """The same checks for both decoders: they differ only in config."""

    def test_shape_64_in_1_out(self, arch):
        m = build_model(make(ModelSettings, arch=arch), 64).eval()
        with torch.no_grad():
            y = m(torch.randn(2, 64, 64, 64))
        assert y.shape == (2, 1, 64, 64)

    def test_checkpoint_roundtrip(self, arch, tmp_path):
        s = make(ModelSettings, arch=arch, decoder_channels=(64, 32, 16, 8, 4))
        m = build_model(s, 64).eval()
        save_checkpoint(tmp_path / "c.pt", m, s, 12.0, 3.0, AEF, epochs_run=2)
        back, ckpt = load_checkpoint(tmp_path / "c.pt")
        x = torch.randn(1, 64, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(back(x), m(x))
        assert ckpt["target_mean"] == 12.0 and ckpt["epochs_run"] == 2


def test_ridge_is_a_pixelwise_linear_map():
    m = build_model(make(ModelSettings, arch="ridge"), 64)
    x = torch.randn(1, 64, 8, 8)
    y = m(x)
    expected = torch.einsum("c,bchw->bhw", m.head.weight.view(-1), x) + m.head.bias
    torch.testing.assert_close(y[:, 0], expected)


def test_multiscale_ridge_sees_box_means_and_checks_its_scales():
    m = build_model(make(ModelSettings, arch="ridge", scales_px=(1, 3)), 64)
    x = torch.zeros(1, 64, 5, 5)
    x[0, :, 2, 2] = 9.0  # one bright pixel; its 3x3 mean is 1 at its neighbours
    f = m.features(x)
    assert f.shape == (1, 128, 5, 5)
    torch.testing.assert_close(f[0, 64:, 2, 2], torch.full((64,), 9.0))  # only valid pixel
    for bad in ([2], [1, 1], []):
        with pytest.raises(ConfigError, match="scales_px"):
            from_mapping(ModelSettings, {"arch": "ridge", "scales_px": bad}, "models.r")


def test_unknown_arch_and_encoder_are_config_errors():
    with pytest.raises(ConfigError, match="arch 'unet3' is unknown"):
        from_mapping(ModelSettings, {"arch": "unet3"}, "models.x")
    with pytest.raises(ConfigError, match="encoder 'resnet7'"):
        from_mapping(ModelSettings, {"arch": "unet", "encoder": "resnet7"}, "models.x")


def test_pretrained_weights_offline_are_one_line(tmp_path):
    """encoder_weights: imagenet without network (and no cached weights): one clear line."""
    import os
    import subprocess
    import sys

    code = (
        "from aefheight.models.factory import ModelSettings, build_model\n"
        "from aefheight.core.schema import make\n"
        "build_model(make(ModelSettings, arch='unet', encoder_weights='imagenet'), 64)\n"
    )
    cache = {k: str(tmp_path / k) for k in ("TORCH_HOME", "HF_HOME", "XDG_CACHE_HOME")}
    env = {**os.environ, **cache, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert "ConfigError" in last and "need network" in last and "encoder_weights: null" in last
