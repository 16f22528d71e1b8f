"""The read-out part of `kdsr tsne`: print (and optionally write as JSON) the R² of each model's D."""

from __future__ import annotations

import json
from pathlib import Path

from torch import nn

__all__ = ["run_readout"]


def run_readout(args, models: dict[str, nn.Module], readout_dirs: list[str], scale: int) -> int:
    """Build the σ or real-world probe set from ``readout_dirs``, print one line per model; 0, or 2 on bad
    input. With --readout-json, write {label: R²} (σ) or {label: {d_spread, r2_<target> | null}}."""
    from kdsr.commands._common import fail
    from kdsr.training.readout import RealWorldReadout, SigmaReadout

    names = "+".join(Path(d).name for d in readout_dirs)
    try:
        if args.readout_realworld:
            probe = RealWorldReadout(
                readout_dirs, scale, args.readout_crops, args.readout_draws, lr_patch=args.lr_patch
            )
        else:
            probe = SigmaReadout(
                readout_dirs, scale, crops_per_image=args.readout_crops, lr_patch=args.lr_patch
            )
    except ValueError as exc:  # e.g. no image large enough for the crops
        return fail("tsne", f"read-out: {exc}")
    scores: dict = {}
    for label, model in models.items():
        if args.readout_realworld:
            result = probe.result(model, args.feature)
            scores[label] = {"d_spread": result.spread, **{f"r2_{k}": v for k, v in result.r2.items()}}
            print(f"real-world read-out ({names}, GroupKFold by image): {result.summary()}  {label}")
        else:
            scores[label] = probe.r2(model, args.feature)
            print(
                f"σ read-out R² ({names}, σ {probe.sigmas_used[0]}-{probe.sigmas_used[-1]}, "
                f"GroupKFold by image): {scores[label]:.3f}  {label}"
            )
    if args.readout_json:
        from kdsr.atomic import atomic_write_text

        atomic_write_text(args.readout_json, json.dumps(scores, indent=2) + "\n")  # as `kdsr eval --json`
    return 0
