"""Mixed precision as plain functions: when bf16 is used, and that a bf16 run trains as well as an
fp32 one and stores fp32 weights (a checkpoint gives the same numbers wherever it is loaded)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from tests.test_classifier import CONFIG, params, squares
from worker.models.cgan import CGAN, CGANConfig
from worker.training.classifier_trainer import train_classifier
from worker.training.precision import as_float, autocast, autocast_dtype, cpu_has_native_bf16

CPU = torch.device("cpu")


def test_native_bf16_is_read_from_the_cpu_flags(tmp_path: Path) -> None:
    with_flag, without = tmp_path / "a", tmp_path / "b"
    with_flag.write_text("processor : 0\nflags\t\t: fpu sse2 avx512f avx512_bf16 avx_vnni\n")
    without.write_text("processor : 0\nflags\t\t: fpu sse2 avx2 avx512f\n")
    assert cpu_has_native_bf16(with_flag) and not cpu_has_native_bf16(without)
    assert not cpu_has_native_bf16(tmp_path / "missing")  # not Linux: fp32, never an error


def test_modes() -> None:
    assert autocast_dtype(CPU, "off") is None and autocast_dtype(CPU, "bf16") is torch.bfloat16
    assert autocast_dtype(CPU, "auto") is (torch.bfloat16 if cpu_has_native_bf16() else None)
    with pytest.raises(ValueError, match="auto, bf16 or off"):
        autocast_dtype(CPU, "fp8")
    with autocast(CPU, None):
        assert not torch.is_autocast_enabled("cpu")
    with autocast(CPU, torch.bfloat16):
        out = torch.nn.Linear(4, 2)(torch.ones(1, 4))
    assert out.dtype is torch.bfloat16 and as_float(out).dtype is torch.float32
    assert as_float(None) is None and as_float({"a": out})["a"].dtype is torch.float32


@pytest.mark.parametrize("mode", ["bf16", "off"])
def test_a_bf16_run_learns_like_fp32_and_keeps_fp32_weights(mode: str) -> None:
    train, test = squares(384, 0), squares(128, 1)
    result = train_classifier(CONFIG, replace(params(4), mixed_precision=mode), train, test, device=CPU,
                              progress=lambda *_: None, should_stop=lambda: False)
    assert result.final["accuracy_colour"] > 0.95 and result.final["accuracy_row"] > 0.95, result.final
    assert all(p.dtype is torch.float32 for p in result.model.parameters())


def test_resize_upsampling_generator_draws_the_same_shapes() -> None:
    config = CGANConfig(image_size=28, channels=1, conditions={"class": 3}, g_width=8, d_width=8, embed_dim=4,
                        latent_dim=8, upsample="resize")
    model = CGAN(config)
    images = model.generator(torch.randn(2, 8), {"class": torch.tensor([0, 2])})
    assert images.shape == (2, 1, 28, 28)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in model.generator.modules())
    with pytest.raises(ValueError, match="upsample"):
        CGAN(replace(config, upsample="bicubic"))
