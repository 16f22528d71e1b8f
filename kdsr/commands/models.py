"""`kdsr models`: list the shipped models -- trained on what, scale, parameters, measured scores, when to use.

kdsr models
"""

from __future__ import annotations

import textwrap

from kdsr.commands._common import EXIT_CODES_HELP


def add_parser(subparsers) -> None:
    """Register `kdsr models`."""
    p = subparsers.add_parser(
        "models",
        help="list the shipped models (loadable by name), their scores and when to use each",
        description="List every model shipped in kdsr/weights/ (use the name with --model / --checkpoint or "
        "kdsr.load(name)): role, scale, parameters (counted from the file), what it was trained on, its "
        "measured scores (Y PSNR dB / SSIM at x4; docs/cli.md) and when to use it. The default of "
        "`kdsr upscale` is marked.",
        epilog=EXIT_CODES_HELP,
    )
    p.set_defaults(func=run)


def run(args) -> int:
    """Print the catalog; returns 0."""
    from kdsr.inference.catalog import CATALOG, DEFAULT_MODEL, DEFAULT_REASON, parameter_count, scale_of
    from kdsr.models.kdsr_model import shipped_names

    shipped = set(shipped_names())
    indent = " " * 4
    for model in CATALOG:
        if model.name not in shipped:
            continue
        mark = "  (default for kdsr upscale)" if model.name == DEFAULT_MODEL else ""
        params = parameter_count(model.name)
        print(f"{model.name}{mark}")
        print(f"{indent}{model.role}, x{scale_of(model.name)}, {params:,} parameters")
        for label, text in (
            ("trained on", model.trained_on),
            ("scores", model.scores),
            ("use for", model.use_for),
        ):
            print(textwrap.fill(f"{label}: {text}", 100, initial_indent=indent, subsequent_indent=indent * 2))
    for name in sorted(shipped - {m.name for m in CATALOG}):
        print(f"{name}\n{indent}(not described; see kdsr/weights/README.md)")
    print()
    print(textwrap.fill(DEFAULT_REASON[0].upper() + DEFAULT_REASON[1:] + ".", 100))
    return 0
