"""Mutation audit: plant named bugs in a temporary copy of the repo, run the tests that should catch each one.

    python tools/mutate.py                     # all; table on stdout and in runs/mutation_results.md
    python tools/mutate.py --only ddp-same-data-every-rank resume-scheduler-restarts
    python tools/mutate.py --list              # names and what each one breaks
    python tools/mutate.py --skip-builds       # leave out the mutations that rebuild the C++ extension

Each mutation replaces one exact snippet of one file (or, for `triton-import-broken`, puts a fake `triton`
package first on PYTHONPATH), then runs only its test selection with `python -m pytest -x`. "caught" = the
selection failed; "MISSED" = it passed (a test gap); "not applicable" = the snippet is no longer in the file
(the code moved on: update the mutation). The working tree is never modified. Runs with OMP_NUM_THREADS=1.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    name: str
    what: str  # the bug, in one line
    path: str  # file to edit, relative to the repo root ("" = environment-only mutation)
    old: str
    new: str
    tests: tuple[str, ...]  # pytest arguments: files and an optional -k selection
    rebuild: bool = (
        False  # the C++ extension must be rebuilt in the copy (python setup.py build_ext --inplace)
    )


MUTATIONS = [
    Mutation(
        "triton-import-broken",
        "`import triton` raises ImportError (a fake package first on PYTHONPATH)",
        "",
        "",
        "",
        ("tests/test_idr_ddc.py", "-k", "expected_backend"),
    ),
    Mutation(
        "resume-scheduler-restarts",
        "the LR schedule ignores the iteration (it never steps, nor continues on resume)",
        "kdsr/training/trainer.py",
        "lr_factor(self.train_cfg, iteration)",
        "lr_factor(self.train_cfg, 0)",
        ("tests/test_training_run.py", "-k", "resume_gives and teacher and not ema"),
    ),
    Mutation(
        "resume-best-psnr-lost",
        "resume forgets best_psnr",
        "kdsr/training/trainer.py",
        'self.best_psnr = ckpt.get("best_psnr")',
        "self.best_psnr = None",
        ("tests/test_training_run.py", "-k", "resume_gives and teacher and not ema"),
    ),
    Mutation(
        "batch-not-seeded-by-iteration",
        "a sample's generator ignores the iteration (every iteration draws the same batch)",
        "kdsr/data/loader.py",
        "np.random.SeedSequence([seed, iteration, rank, index])",
        "np.random.SeedSequence([seed, rank, index])",
        ("tests/test_training_run.py", "-k", "batches_depend"),
    ),
    Mutation(
        "batch-samples-share-a-generator",
        "every sample of a batch gets the same generator (index left out of the seed)",
        "kdsr/data/loader.py",
        "np.random.SeedSequence([seed, iteration, rank, index])",
        "np.random.SeedSequence([seed, iteration, rank])",
        ("tests/test_data_loader.py", "-k", "sample_index"),
    ),
    Mutation(
        "worker-generator-state-dropped",
        "real-world degradation restarts each sample's generator instead of continuing the worker's",
        "kdsr/data/loader.py",
        "            g.set_state(state.clone())",
        "            g.manual_seed(0)",
        ("tests/test_data_loader.py", "-k", "continues"),
    ),
    Mutation(
        "cache-rounds-16-bit",
        "the training caches decode 16-bit HR images to 8 bits",
        "kdsr/data/cache.py",
        "yield i, read_samples(self.files[i])",
        'yield i, __import__("kdsr.data.io", fromlist=["io"]).read_image_uint8(self.files[i]).numpy()',
        ("tests/test_bit_depth.py", "-k", "every_cache_mode"),
    ),
    Mutation(
        "cache-bar-ignores-no-progress",
        "the 'caching HR images' bar shows whatever the trainer's progress flag says",
        "kdsr/training/trainer.py",
        "progress=self.progress and self.ctx.is_main",
        "progress=True",
        ("tests/test_data_loader.py", "-k", "cache_bar"),
    ),
    Mutation(
        "ddp-same-data-every-rank",
        "every DDP rank draws the same samples (rank left out of the seed)",
        "kdsr/training/trainer.py",
        "self.local_batch, self.ctx.rank, progress",
        "self.local_batch, 0, progress",
        ("tests/test_training_ddp.py", "-k", "teacher"),
    ),
    Mutation(
        "ddp-every-rank-writes",
        "every DDP rank writes last.pt (not only rank 0)",
        "kdsr/training/loop.py",
        "if ctx.is_main and (it % log_cfg.save_every",
        "if (it % log_cfg.save_every",
        ("tests/test_training_ddp.py", "-k", "teacher"),
    ),
    Mutation(
        "reference-bf16-truncating-store",
        "bf16 results rounded toward zero instead of to nearest",
        "kdsr_kernels/reference.py",
        "    return out.to(dtype).contiguous()",
        "    if dtype == torch.bfloat16:\n"
        "        out = (out.view(torch.int32) & -65536).view(torch.float32)\n"
        "    return out.to(dtype).contiguous()",
        ("tests/test_idr_ddc.py", "-k", "half and reference"),
    ),
    Mutation(
        "reference-half-storage-accumulation",
        "fp16/bf16 accumulated in storage precision, not float32",
        "kdsr_kernels/reference.py",
        "    return torch.float32 if dtype in _HALF else dtype",
        "    return dtype",
        ("tests/test_idr_ddc.py", "-k", "half and reference"),
    ),
    Mutation(
        "reference-relu-edge",
        "LeakyReLU' uses out >= 0 (wrong at slope 0.0, where every negative output is exactly 0)",
        "kdsr_kernels/reference.py",
        "torch.where(out > 0, grad_out, grad_out * negative_slope)",
        "torch.where(out >= 0, grad_out, grad_out * negative_slope)",
        ("tests/test_idr_ddc.py", "-k", "reference and (fp32 or gradcheck)"),
    ),
    Mutation(
        "cuda-relu-edge",
        "CUDA LeakyReLU' gate uses >= 0",
        "csrc/idr_ddc_cuda.cuh",
        "!(gate > A(0))",
        "!(gate >= A(0))",
        ("tests/test_cuda_compile.py", "-k", "match_oracle"),
    ),
    Mutation(
        "cuda-grad-w-only-broken",
        "CUDA backward computes grad_w only when grad_x is requested too",
        "csrc/idr_ddc_bwd.cu",
        "const bool need_gw = grad_w != nullptr;",
        "const bool need_gw = grad_w != nullptr && grad_x != nullptr;",
        ("tests/test_cuda_compile.py", "-k", "each_needed"),
    ),
    Mutation(
        "cuda-halo-not-zeroed",
        "CUDA tile staging leaves the out-of-plane halo unwritten (relies on zeroed shared memory)",
        "csrc/idr_ddc_cuda.cuh",
        "for (int e = 0; e < kVec; ++e) dst[e] = A(0);",
        "for (int e = 0; e < kVec; ++e) (void)dst;",
        ("tests/test_cuda_compile.py", "-k", "match_oracle"),
    ),
    Mutation(
        "cpu-isa-avx512-downgraded",
        "KDSR_CPU_ISA=avx512 silently runs AVX2 on an AVX-512 CPU",
        "csrc/idr_ddc_cpu.cpp",
        'if (avx512 && (cap.empty() || cap == "avx512")) return CpuIsa::avx512;',
        'if (false && avx512 && (cap.empty() || cap == "avx512")) return CpuIsa::avx512;',
        ("tests/test_cpu_backend.py", "-k", "instruction_set and avx512"),
        rebuild=True,
    ),
    # ---- issue 25: what the GAN stage, the real-world pipeline and the writers compute (own wording; none of
    # these is one of the examples, each is of one of its classes)
    Mutation(
        "gan-d-fake-term-labelled-real",
        "D's term on generated images uses the real label (BCE(D(SR), 1))",
        "kdsr/training/gan_losses.py",
        "return weight * _bce(fake_logits, 0.0)",
        "return weight * _bce(fake_logits, 1.0)",
        ("tests/test_gan_gradients.py", "-k", "one_step"),
    ),
    Mutation(
        "gan-adversarial-weight-ignored",
        "G's adversarial term ignores loss.gan_weight",
        "kdsr/training/gan_losses.py",
        "return weight * _bce(fake_logits, 1.0)",
        "return _bce(fake_logits, 1.0)",
        ("tests/test_gan_gradients.py", "-k", "one_step"),
    ),
    Mutation(
        "gan-d-fake-term-on-gt",
        "D's fake term is computed on the GT instead of on SR",
        "kdsr/training/gan_stage.py",
        "fake_logits = self.d_forward(sr.detach())",
        "fake_logits = self.d_forward(hr)",
        ("tests/test_gan_gradients.py", "-k", "one_step"),
    ),
    Mutation(
        "gan-perceptual-weight-ignored",
        "G's perceptual term ignores loss.perceptual_weight",
        "kdsr/training/gan_stage.py",
        'c["perceptual_weight"] * percep',
        "percep",
        ("tests/test_gan_gradients.py", "-k", "one_step"),
    ),
    Mutation(
        "gan-kd-temperature-fixed",
        "the GAN stage's KD loss uses τ = 0.15 whatever train.temperature says",
        "kdsr/training/gan_stage.py",
        'kd_loss(student_dprime, teacher_dprime, "kl", c["temperature"])',
        'kd_loss(student_dprime, teacher_dprime, "kl", 0.15)',
        ("tests/test_gan_gradients.py", "-k", "one_step"),
    ),
    Mutation(
        "gan-ema-decay-0.99",
        "the GAN stage's default EMA decay is 0.99 (not 0.999)",
        "kdsr/training/gan_stage.py",
        '"ema_decay": 0.999,',
        '"ema_decay": 0.99,',
        ("tests/test_gan_gradients.py", "-k", "ema"),
    ),
    Mutation(
        "perceptual-skips-imagenet-normalisation",
        "the perceptual loss feeds SR to VGG19 without the ImageNet normalisation",
        "kdsr/training/perceptual.py",
        "f_sr = self.net((sr - self.mean) / self.std)",
        "f_sr = self.net(sr)",
        ("tests/test_gan_gradients.py", "-k", "layer_weights"),
    ),
    Mutation(
        "rw-stage2-gray-prob-from-stage1",
        "stage 2 draws gray noise with stage 1's probability",
        "kdsr/degradations/realworld.py",
        'gray=torch.rand(n, generator=g, dtype=torch.float64) < getattr(self, "gray_noise_prob" + sfx),',
        "gray=torch.rand(n, generator=g, dtype=torch.float64) < self.gray_noise_prob,",
        ("tests/test_realworld_sampler.py", "-k", "every_probability"),
    ),
    Mutation(
        "rw-stage2-resize-probs-from-stage1",
        "stage 2 picks up/down/keep with stage 1's probabilities",
        "kdsr/degradations/realworld.py",
        'resize = _choice(n, getattr(self, "resize_prob" + sfx), g)',
        "resize = _choice(n, self.resize_prob, g)",
        ("tests/test_realworld_sampler.py", "-k", "every_probability"),
    ),
    Mutation(
        "rw-up-and-down-scales-swapped",
        "an 'up' resize gets the down-scale draw and vice versa",
        "kdsr/degradations/realworld.py",
        "scale = torch.where(resize == 0, up, torch.where(resize == 1, down, torch.ones_like(up)))",
        "scale = torch.where(resize == 0, down, torch.where(resize == 1, up, torch.ones_like(up)))",
        ("tests/test_realworld_sampler.py", "-k", "every_probability"),
    ),
    Mutation(
        "rw-stage1-blur-optional",
        "stage 1's blur is skipped with p 0.2 (it always runs)",
        "kdsr/degradations/realworld.py",
        "blur = blur_u < self.second_blur_prob if second else torch.ones(n, dtype=torch.bool)",
        "blur = blur_u < self.second_blur_prob",
        ("tests/test_realworld_sampler.py", "-k", "every_probability"),
    ),
    Mutation(
        "rw-sinc-cutoff-size-13-small",
        "a 13×13 sinc kernel gets the small kernels' cut-off range U(π/3, π)",
        "kdsr/degradations/realworld_kernels.py",
        "omega_lo = torch.where(size < 13, math.pi / 3, math.pi / 5)",
        "omega_lo = torch.where(size <= 13, math.pi / 3, math.pi / 5)",
        ("tests/test_realworld_sampler.py", "-k", "every_probability"),
    ),
    Mutation(
        "rw-final-sinc-wide-cutoff",
        "the final sinc's cut-off is drawn from U(π/5, π)",
        "kdsr/degradations/realworld_kernels.py",
        "omega_c = _uniform(batch, math.pi / 3, math.pi, g)",
        "omega_c = _uniform(batch, math.pi / 5, math.pi, g)",
        ("tests/test_realworld_sampler.py", "-k", "every_probability"),
    ),
    Mutation(
        "rw-generalized-probs-swapped",
        "generalized iso / aniso kernel probabilities swapped (0.03 / 0.12)",
        "kdsr/degradations/realworld_kernels.py",
        "KERNEL_PROBS = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)",
        "KERNEL_PROBS = (0.45, 0.25, 0.03, 0.12, 0.12, 0.03)",
        ("tests/test_realworld_sampler.py", "-k", "every_probability"),
    ),
    Mutation(
        "rw-beta-always-above-one",
        "generalized / plateau β never takes its below-1 branch",
        "kdsr/degradations/realworld_kernels.py",
        "low_side = torch.rand(batch, generator=g, dtype=torch.float64) < 0.5",
        "low_side = torch.rand(batch, generator=g, dtype=torch.float64) < 0.0",
        ("tests/test_realworld_sampler.py", "-k", "every_probability"),
    ),
    Mutation(
        "rw-stage2-noise-with-stage1-params",
        "the second noise is applied with stage 1's type / level / gray draws",
        "kdsr/degradations/realworld.py",
        "x = self._noise(x, s2, sl, g)",
        "x = self._noise(x, p.first, sl, g)",
        ("tests/test_realworld_sampler.py", "-k", "own_draws"),
    ),
    Mutation(
        "rw-final-order-ignored",
        "the final JPEG always comes after resize + sinc (the drawn order is ignored)",
        "kdsr/degradations/realworld.py",
        "if bool(p.jpeg_first[i]):",
        "if False:",
        ("tests/test_realworld_sampler.py", "-k", "own_draws"),
    ),
    Mutation(
        "rw-gaussian-sigma-of-sample-0",
        "batched Gaussian noise scales every sample by sample 0's σ",
        "kdsr/degradations/realworld_noise.py",
        "return noise * _per_sample(sigma, img) / 255.0",
        "return noise * _per_sample(sigma[:1].expand(len(sigma)), img) / 255.0",
        ("tests/test_realworld_sampler.py", "-k", "gaussian_noise_level"),
    ),
    Mutation(
        "rw-poisson-scale-of-sample-0",
        "batched Poisson noise scales every sample by sample 0's scale",
        "kdsr/degradations/realworld_noise.py",
        "return noise * _per_sample(scale, img)",
        "return noise * _per_sample(scale[:1].expand(len(scale)), img)",
        ("tests/test_realworld_sampler.py", "-k", "poisson_noise_scale"),
    ),
    Mutation(
        "rw-stage2-size-h-w-swapped",
        "stage 2's target size swaps height and width",
        "kdsr/degradations/realworld.py",
        "(int(h / self.scale * sc), int(w / self.scale * sc))",
        "(int(w / self.scale * sc), int(h / self.scale * sc))",
        ("tests/test_pipeline_geometry.py", "-k", "intermediate"),
    ),
    Mutation(
        "rw-final-size-transposed",
        "the final resize goes to W/scale × H/scale",
        "kdsr/degradations/realworld.py",
        "out_size = (h // self.scale, w // self.scale)",
        "out_size = (w // self.scale, h // self.scale)",
        ("tests/test_pipeline_geometry.py", "-k", "intermediate"),
    ),
    Mutation(
        "paired-crop-gt-rows-at-left",
        "the paired crop cuts the GT rows at the LR crop's `left`",
        "kdsr/data/realworld.py",
        "gt = gt[..., top * s : (top + p) * s, left * s : (left + p) * s]",
        "gt = gt[..., left * s : (left + p) * s, left * s : (left + p) * s]",
        ("tests/test_pipeline_geometry.py", "-k", "paired_crop"),
    ),
    Mutation(
        "augment-vertical-flip-lost",
        "the classic crops are never flipped vertically",
        "kdsr/data/dataset.py",
        "            if vflip:\n",
        "            if False:\n",
        ("tests/test_pipeline_geometry.py", "-k", "dihedral"),
    ),
    Mutation(
        "atomic-folder-not-fsynced",
        "atomic writes do not fsync the folder after the rename",
        "kdsr/atomic.py",
        "    _fsync_dir(path.parent)\n",
        "",
        ("tests/test_durability.py",),
    ),
    Mutation(
        "atomic-path-writer-not-fsynced",
        "atomic_write_path renames the temp file without fsync'ing its data",
        "kdsr/atomic.py",
        '        with open(tmp, "rb") as handle:\n            os.fsync(handle.fileno())',
        '        with open(tmp, "rb") as handle:\n            pass',
        ("tests/test_durability.py",),
    ),
    Mutation(
        "cpu-isa-avx2-only-on-request",
        "the CPU extension runs SSE2 on an AVX2 CPU unless KDSR_CPU_ISA asks for avx2",
        "csrc/idr_ddc_cpu.cpp",
        'if (avx2 && (cap.empty() || cap == "avx512" || cap == "avx2")) return CpuIsa::avx2;',
        'if (avx2 && (cap == "avx512" || cap == "avx2")) return CpuIsa::avx2;',
        ("tests/test_cpu_isa.py",),
        rebuild=True,
    ),
]


def _copy_repo(dest: Path) -> None:
    """The working tree (with its built extension), without .git and caches."""
    ignore = shutil.ignore_patterns(".git", "__pycache__", ".pytest_cache", ".ruff_cache", "runs", "build")
    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)


def _apply(m: Mutation, root: Path, env: dict[str, str]) -> bool:
    """Plant `m` in the copy at `root`; False when its snippet is not (exactly once) in the file."""
    if not m.path:  # environment mutation: a triton that cannot be imported
        fake = root / "_fake_site" / "triton"
        fake.mkdir(parents=True)
        (fake / "__init__.py").write_text('raise ImportError("planted by tools/mutate.py")\n')
        env["PYTHONPATH"] = os.pathsep.join([str(fake.parent), env.get("PYTHONPATH", "")])
        return True
    target = root / m.path
    text = target.read_text()
    if text.count(m.old) != 1:
        return False
    target.write_text(text.replace(m.old, m.new))
    return True


def run_one(m: Mutation, timeout: int) -> tuple[str, float, str]:
    """(status, seconds, last output line) of one mutation in its own temporary copy."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix=f"kdsr-mutant-{m.name}-") as tmp:
        root = Path(tmp) / "repo"
        _copy_repo(root)
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        if not _apply(m, root, env):
            return "not applicable", time.perf_counter() - start, f"snippet not found once in {m.path}"
        if m.rebuild:
            build = subprocess.run(
                [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
                cwd=root,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
            )
            if build.returncode != 0:
                return "build failed", time.perf_counter() - start, build.stderr.strip().splitlines()[-1]
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *m.tests]
        try:
            result = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return "caught (timeout)", time.perf_counter() - start, f"tests ran over {timeout} s"
    lines = [line for line in result.stdout.strip().splitlines() if line.strip()]
    last = lines[-1] if lines else result.stderr.strip()[-200:]
    status = {0: "MISSED", 1: "caught", 5: "no tests selected"}.get(result.returncode, "caught (error)")
    return status, time.perf_counter() - start, last


def _table(rows: list[tuple[Mutation, str, float, str]]) -> str:
    out = ["| mutation | bug planted | tests run | result | s |", "|---|---|---|---|---|"]
    for m, status, seconds, _ in rows:
        tests = " ".join(m.tests).replace("|", "\\|")
        out.append(f"| `{m.name}` | {m.what} | `{tests}` | **{status}** | {seconds:.0f} |")
    caught = sum(status.startswith("caught") for _, status, _, _ in rows)
    out.append("")
    out.append(f"{caught} of {len(rows)} mutations caught.")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", metavar="NAME", help="run only these mutations")
    parser.add_argument("--skip-builds", action="store_true", help="leave out mutations that rebuild C++")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument(
        "--out", type=Path, default=Path("runs/mutation_results.md"), help="where the table goes"
    )
    parser.add_argument("--timeout", type=int, default=900, help="seconds per build and per test run")
    args = parser.parse_args(argv)
    selected = [m for m in MUTATIONS if not args.only or m.name in args.only]
    if args.only and len(selected) != len(set(args.only)):
        known = ", ".join(m.name for m in MUTATIONS)
        parser.error(f"unknown mutation in --only; known: {known}")
    if args.skip_builds:
        selected = [m for m in selected if not m.rebuild]
    if args.list:
        for m in selected:
            print(f"{m.name:38s} {m.what}")
        return 0
    rows = []
    for m in selected:
        status, seconds, last = run_one(m, args.timeout)
        print(f"{m.name:38s} {status:18s} {seconds:6.0f} s  {last}", flush=True)
        rows.append((m, status, seconds, last))
    table = _table(rows)
    print("\n" + table)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(table + "\n")
    print(f"\ntable written to {args.out}")
    return 0 if all(status.startswith("caught") for _, status, _, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
