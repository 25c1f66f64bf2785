"""One factory for every model of the study: smp decoders and the pixel-wise Ridge baseline.

U-Net and U-Net++ differ only in ``arch``. The Ridge baselines are fitted with scikit-learn
and then held as a small fixed network (masked box means of the bands at ``scales_px``, then a
1x1 convolution), so that checkpoints, prediction and evaluation treat every model the same
way. ``scales_px: [1]`` is the paper's pixel-wise Ridge; several scales make the control that
separates "spatial context" from "denoising": a linear model on locally averaged bands.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from aefheight.core import aef
from aefheight.core.errors import ConfigError, RasterError
from aefheight.core.files import atomic_path
from aefheight.models.kinds import BASELINE_ARCHS, RIDGE

ENCODER_DEPTH = 5  # smp's default encoder depth: the decoders have this many stages


def smp_archs() -> dict[str, Any]:
    """Architectures segmentation-models-pytorch offers, by lower-case name."""
    import segmentation_models_pytorch as smp

    return {
        name.lower(): obj
        for name in smp.__all__
        if isinstance(obj := getattr(smp, name), type) and issubclass(obj, nn.Module)
    }


@dataclass(frozen=True)
class ModelSettings:
    """One model of the study (config ``models.<name>``)."""

    SECTION: ClassVar[str] = "models.<name>"
    arch: str  # unet | unetplusplus | any smp architecture | ridge
    encoder: str
    encoder_weights: str | None  # None offline; "imagenet" downloads weights once
    decoder_channels: tuple[int, ...] | None  # None: smp's default
    encoder_params: dict[str, Any] | None  # a timm encoder's keyword arguments (tu- names)
    alpha: float  # ridge: L2 penalty
    max_pixels: int  # ridge: training pixels sampled from train patches
    scales_px: tuple[int, ...]  # ridge: box-mean sides; (1,) = pixel-wise
    dem_channel: bool  # nets: the coarse DEM's relief as a 65th input channel
    target: str  # nets: height | residual (reference - coarse DEM)

    def check(self, section: str) -> None:
        """What the schema cannot know: smp's architecture and encoder names, decoder depth."""
        if self.arch in BASELINE_ARCHS:
            if self.dem_channel or self.target != "height":
                raise ConfigError(
                    f"{section}: dem_channel and target residual are for nets, not {self.arch}; "
                    "remove them"
                )
            return
        if self.decoder_channels is not None and len(self.decoder_channels) != ENCODER_DEPTH:
            raise ConfigError(
                f"{section}.decoder_channels needs {ENCODER_DEPTH} widths (one per encoder "
                f"stage), got {list(self.decoder_channels)}; or null for smp's default"
            )
        archs = smp_archs()
        if self.arch not in archs:
            raise ConfigError(
                f"{section}.arch {self.arch!r} is unknown; use ridge or one of "
                f"{', '.join(sorted(archs))}"
            )
        import segmentation_models_pytorch as smp

        encoders = smp.encoders.get_encoder_names()
        if self.encoder.startswith("tu-"):
            import timm

            known = self.encoder.removeprefix("tu-") in timm.list_models()
        else:
            known = self.encoder in encoders
        if not known:
            raise ConfigError(
                f"{section}.encoder {self.encoder!r} is unknown to segmentation-models-pytorch "
                f"(e.g. resnet18, resnet34, efficientnet-b0, or tu-<a timm model>)"
            )
        if self.encoder_params:
            try:
                build_model(self, aef.BANDS)
            except (TypeError, ValueError, RuntimeError) as exc:
                bad = re.search(r"unexpected keyword argument '(\w+)'", str(exc))
                key = f"{section}.encoder_params" + (f".{bad.group(1)}" if bad else "")
                raise ConfigError(
                    f"{key}: the encoder {self.encoder} cannot be built with "
                    f"{self.encoder_params} ({str(exc).splitlines()[0]}); fix or remove it"
                ) from None

    @property
    def is_net(self) -> bool:
        return self.arch not in BASELINE_ARCHS

    @property
    def uses_dem(self) -> bool:
        """Whether the model reads the coarse DEM (as a channel or as its target's base)."""
        return self.dem_channel or self.target == "residual"

    def in_channels(self, bands: int) -> int:
        """The input channels on ``bands`` embedding bands (plus the coarse DEM's, if used)."""
        return bands + int(self.dem_channel)


def _box_mean(t: torch.Tensor, k: int) -> torch.Tensor:
    """Compute the k x k box mean with zero padding (odd k), the size of ``t``.

    Running sums along each axis: O(1) per pixel whatever k (pooling is O(k): at k = 45 it
    made the multi-scale Ridge's prediction several times slower than a net's).
    """
    p = k // 2
    for dim in (-2, -1):
        c = F.pad(t, (p + 1, p, 0, 0) if dim == -1 else (0, 0, p + 1, p)).cumsum(dim)
        n = c.shape[dim]
        t = c.narrow(dim, k, n - k) - c.narrow(dim, 0, n - k)
    return t / (k * k)


class BoxRidge(nn.Module):
    """A linear model on masked box means of the bands at several scales.

    Use it (through :func:`build_model` with ``arch: ridge``) for the Ridge baselines: nodata
    pixels (all bands 0 after de-quantization) are left out of every mean, and each scale's
    mean is taken over the window the model is given, as the nets see their window.
    """

    def __init__(self, in_channels: int, scales: tuple[int, ...]) -> None:
        super().__init__()
        self.scales = tuple(scales)
        self.head = nn.Conv2d(in_channels * len(self.scales), 1, kernel_size=1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The regression's inputs: the bands' box means, ``len(scales) * C`` channels."""
        valid = (x != 0).any(dim=1, keepdim=True).to(x.dtype)
        out = []
        for k in self.scales:
            if k == 1:
                out.append(x)
                continue
            out.append(_box_mean(x * valid, k) / _box_mean(valid, k).clamp_min(1e-6))
        return torch.cat(out, dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def pick_device(name: str, key: str) -> torch.device:
    """``auto`` takes CUDA when present, else the CPU; ``key`` names the setting in messages."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{key} is cuda but no CUDA device is visible; use auto or cpu")
    return torch.device(name)


def build_model(s: ModelSettings, bands: int) -> nn.Module:
    """Build a model on ``bands`` embedding bands (the data's) with one output, standardized."""
    in_channels = s.in_channels(bands)
    if s.arch == RIDGE:
        return BoxRidge(in_channels, s.scales_px)
    import segmentation_models_pytorch as smp

    kwargs: dict[str, Any] = dict(s.encoder_params or {})
    if s.decoder_channels is not None:
        kwargs["decoder_channels"] = list(s.decoder_channels)
    try:
        return smp.create_model(
            s.arch,
            encoder_name=s.encoder,
            encoder_weights=s.encoder_weights,
            in_channels=in_channels,
            classes=1,
            **kwargs,
        )
    except Exception as exc:
        if s.encoder_weights is None:
            raise
        # pretrained weights are downloaded once (timm / the Hugging Face hub): offline, the
        # hub's errors run to dozens of lines
        raise ConfigError(
            f"encoder_weights {s.encoder_weights!r} of {s.encoder} could not be loaded "
            f"({type(exc).__name__}): they are downloaded once and need network; "
            "use encoder_weights: null offline"
        ) from None


def save_checkpoint(
    path: Path,
    model: nn.Module,
    s: ModelSettings,
    mean: float,
    std: float,
    embeddings: tuple[str, int],
    **extra: Any,
) -> None:
    """Write a self-describing checkpoint (weights, settings, target scaling), atomically.

    ``embeddings`` is the (product, band count) trained on, checked before any prediction.
    """
    state = {
        "model": model.state_dict(),
        "settings": asdict(s),
        "embedding_product": embeddings[0],
        "embedding_bands": int(embeddings[1]),
        "target_mean": float(mean),
        "target_std": float(std),
        **extra,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path, device: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model of a checkpoint; returns (model in eval mode, checkpoint dict)."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        raise RasterError(f"cannot read checkpoint {path}: {exc}") from exc
    settings = dict(ckpt["settings"])
    for key in ("decoder_channels", "scales_px"):
        if settings.get(key) is not None:
            settings[key] = tuple(settings[key])
    s = ModelSettings(**{**settings, "encoder_weights": None})  # weights come from the file
    ckpt.setdefault("embedding_product", "aef")  # checkpoints before other products
    ckpt.setdefault("embedding_bands", aef.BANDS)
    model = build_model(s, int(ckpt["embedding_bands"]))
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), ckpt


def check_embeddings(trained: tuple[str, int], src: Any, checkpoint_path: Path) -> None:
    """Stop unless the open embedding raster ``src`` holds the (product, bands) ``trained``."""
    from aefheight.core.embeddings import describe

    product, bands, _ = describe(src)
    if (product, bands) != trained:
        raise RasterError(
            f"{checkpoint_path} was trained on {trained[1]}-band {trained[0]} embeddings; "
            f"{src.name} holds {bands}-band {product}: predict with a model trained on them"
        )
