"""Parameter and MAC counts, counted as the paper / spec kdsr.md §4 and §7 count them."""

from __future__ import annotations

import torch
from torch import nn

from .sr_network import IDRDDC, MeanShift


def count_parameters(model: nn.Module) -> dict[str, int]:
    """{"total", "trainable", "encoder", "sr_net"} parameter counts.

    "total" includes the 24 frozen MeanShift parameters, as the paper's counts (`cal_parms.py`) do.
    """
    counts = {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    for name in ("encoder", "sr_net"):
        sub = getattr(model, name, None)
        if isinstance(sub, nn.Module):
            counts[name] = sum(p.numel() for p in sub.parameters())
    return counts


def count_macs(
    model: nn.Module, lr_size: tuple[int, int] = (180, 320), batch: int = 1, include_dynamic: bool = False
) -> dict[str, int]:
    """Multiply-accumulates of one forward pass at LR size `lr_size` (H, W), counted on a meta-device copy.

    Spec §7 (thop style): the multiply-adds of nn.Conv2d and nn.Linear modules only, biases excluded, the
    functional dynamic depthwise convolution excluded, and the frozen MeanShift 1x1 convs (a constant shift,
    8.8 M MACs at 180x320 x4) excluded -- this reproduces the paper's 623.61 G for KDSR_S-L at 180x320
    (with the MeanShift convs it would round to 623.62). With `include_dynamic=True` the 9 MACs per output
    element of every IDR-DDC are added.

    Returns {"total", "encoder", "sr_net"} in MACs (not GMACs).
    """
    from .kdsr_model import KDSRTeacher, _KDSRModel  # local: avoid an import cycle

    if not isinstance(model, _KDSRModel):
        raise TypeError(f"count_macs expects a KDSRStudent or KDSRTeacher, got {type(model).__name__}")
    H, W = lr_size
    sizes = {k: getattr(model, k) for k in ("n_feats", "n_blocks", "n_encoder_res")}
    with torch.device("meta"):
        twin = type(model)(model.variant, model.scale, False, **sizes)
        lr = torch.empty(batch, 3, H, W)
        hr = torch.empty(batch, 3, H * model.scale, W * model.scale)
    twin.validate_inputs = False
    totals = {"encoder": 0, "sr_net": 0}
    handles = []

    def counter(part: str):
        def hook(module: nn.Module, inputs, output: torch.Tensor) -> None:
            if isinstance(module, MeanShift):
                return
            if isinstance(module, nn.Conv2d):
                kh, kw = module.kernel_size
                totals[part] += output.numel() * (module.in_channels // module.groups) * kh * kw
            elif isinstance(module, nn.Linear):
                totals[part] += output.numel() * module.in_features
            elif isinstance(module, IDRDDC) and include_dynamic:
                totals[part] += output.numel() * 9

        return hook

    for part in ("encoder", "sr_net"):
        for module in getattr(twin, part).modules():
            if isinstance(module, (nn.Conv2d, nn.Linear, IDRDDC)):
                handles.append(module.register_forward_hook(counter(part)))
    try:
        with torch.no_grad():
            if isinstance(twin, KDSRTeacher):
                twin(lr, hr)
            else:
                twin(lr)
    finally:
        for handle in handles:
            handle.remove()
    return {"total": totals["encoder"] + totals["sr_net"], **totals}
