"""The training data path: DataLoader workers, per-sample generators, cache modes, resume, data errors."""

from __future__ import annotations

import ast
import os
import warnings
from pathlib import Path

import pytest
import torch
import yaml
from test_training_support import make_image_folder, tiny_overrides

import kdsr.training.build as build_module
import kdsr.training.trainer as trainer_module
from kdsr.cli import main
from kdsr.data.cache import ImageStore, cache_mode
from kdsr.data.dataset import HRImageDataset
from kdsr.data.loader import ClassicBatches, TrainLoader, auto_workers
from kdsr.degradations.pipeline import ClassicDegradation
from kdsr.training import checkpoint as ckpt_io
from kdsr.training.config import ConfigError, load_config
from kdsr.training.trainer import Trainer

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory):
    return make_image_folder(tmp_path_factory.mktemp("loader") / "hr", count=3, size=48)


def _cfg(name, train_dir, out, *extra, iters=4):
    return load_config(name, [*tiny_overrides(train_dir, out, None, iters), *extra])


NOISY = ("degradation.noise=5", "degradation.per_sample=true")


@pytest.mark.parametrize("extra", [(), NOISY], ids=["batch-kernel", "per-sample-noisy"])
def test_losses_identical_for_0_and_2_workers(train_dir, tmp_path, extra):
    runs = []
    for workers in (0, 2):
        cfg = _cfg(
            "tiny_iso_x4_teacher", train_dir, tmp_path / f"w{workers}", f"data.workers={workers}", *extra
        )
        runs.append(Trainer(cfg, progress=False).run().losses)
    assert len(runs[0]) == 4 and runs[0] == runs[1]


def test_resume_with_workers_gives_identical_losses(train_dir, tmp_path):
    sets = ("data.workers=2", "data.cache=disk", f"data.cache_dir={tmp_path / 'cache'}")
    full = Trainer(_cfg("tiny_iso_x4_teacher", train_dir, tmp_path / "a", *sets), progress=False).run()
    first = Trainer(_cfg("tiny_iso_x4_teacher", train_dir, tmp_path / "b", *sets), progress=False)
    first = first.run(stop_after=2)
    ckpt = ckpt_io.load_checkpoint(first.run_dir / "last.pt")
    torch.manual_seed(1234)  # the global RNG plays no part in the batches
    second = Trainer(ckpt["config"], resume=ckpt, progress=False).run()
    assert first.losses + second.losses == full.losses


def test_realworld_batches_identical_for_workers_and_resume(train_dir, tmp_path):
    sets = ("degradation.kind=realworld", "data.crop_size=48", "data.queue_size=4", "train.ema_decay=0.9")
    full = Trainer(
        _cfg("tiny_realworld_x4_teacher", train_dir, tmp_path / "a", *sets, "data.workers=2"), progress=False
    ).run()
    cfg = _cfg("tiny_realworld_x4_teacher", train_dir, tmp_path / "b", *sets, "data.workers=0")
    first = Trainer(cfg, progress=False).run(stop_after=2)
    ckpt = ckpt_io.load_checkpoint(first.run_dir / "last.pt")
    ckpt["config"]["data"]["workers"] = 2
    second = Trainer(ckpt["config"], resume=ckpt, progress=False).run()
    assert first.losses + second.losses == full.losses


def test_batch_depends_on_sample_index_and_not_on_the_global_rng(train_dir, tmp_path):
    trainer = Trainer(_cfg("tiny_iso_x4_teacher", train_dir, tmp_path), progress=False)
    state = torch.get_rng_state()
    item = trainer.batch_source[3]
    assert torch.equal(torch.get_rng_state(), state)  # nothing drawn from, nothing reseeded
    hr = item["hr"]
    assert hr.dtype == torch.uint8 and hr.shape == (4, 3, 32, 32)
    assert all(not torch.equal(hr[0], hr[j]) for j in range(1, 4))  # every sample has its own generator
    again = trainer.batch_source[3]
    assert all(torch.equal(item[k], again[k]) for k in ("hr", "kernel", "noise"))


def test_loader_items_equal_in_process_items_and_restart_midway(train_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dataset = HRImageDataset(train_dir, scale=4, lr_patch=4, cache="ram", progress=False)
    source = ClassicBatches(dataset, ClassicDegradation(scale=4, noise=(0, 5)), batch=2, seed=7, length=6)
    loader = TrainLoader(source, workers=2)
    try:
        loader.start(1, 4)
        got = [loader.get(i) for i in (1, 2)]
        loader.start(4, 6)  # a restart (resume) at another iteration, same persistent workers
        got += [loader.get(4), loader.get(0)]  # 0: not where the iterator is, built in this process
    finally:
        loader.close()
    for item, it in zip(got, (1, 2, 4, 0), strict=True):
        ref = source[it]
        assert item["iteration"] == it and all(
            torch.equal(item[k], ref[k]) for k in ("hr", "kernel", "field")
        )


def test_cache_modes_give_the_same_crops_and_disk_cache_is_reused_then_refreshed(train_dir, tmp_path):
    files = sorted(train_dir.glob("*.png"))
    cache_dir = tmp_path / "cache"
    stores = {m: ImageStore(files, m, cache_dir, progress=False) for m in ("none", "ram", "disk")}
    for i in range(len(files)):
        ref = stores["none"].array(i)
        assert all((stores[m].array(i) == ref).all() for m in ("ram", "disk"))
    cached = sorted(cache_dir.glob("*.npy"))
    assert len(cached) == 3 and oct(cached[0].stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    stamps = [p.stat().st_mtime_ns for p in cached]
    ImageStore(files, "disk", cache_dir, progress=False)
    assert [p.stat().st_mtime_ns for p in cached] == stamps  # fresh entries are not rewritten
    os.utime(files[0], ns=(1_000_000_000, 1_000_000_000))  # the source changed: its entry is stale
    again = ImageStore(files, "disk", cache_dir, progress=False)
    assert len(list(cache_dir.glob(f"{files[0].name}.*.npy"))) == 1 and not cached[0].exists()
    assert (again.array(0) == stores["none"].array(0)).all()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_cache_bar_follows_the_trainers_progress_flag(train_dir, tmp_path, capsys):
    for progress in (False, True):  # True: the control, so the check can fail
        Trainer(_cfg("tiny_iso_x4_teacher", train_dir, tmp_path / str(progress)), progress=progress)
        err = capsys.readouterr().err
        assert ("caching HR images in RAM" in err) is progress, err


def test_cache_values_old_booleans_and_bad_ones(train_dir, tmp_path):
    assert (cache_mode(True), cache_mode(False), cache_mode("disk")) == ("ram", "none", "disk")
    assert _cfg("tiny_iso_x4_teacher", train_dir, tmp_path, "data.cache=false")["data"]["cache"] is False
    for bad in ("yes please", "1"):
        with pytest.raises(ConfigError, match="data.cache must be ram, disk or none"):
            _cfg("tiny_iso_x4_teacher", train_dir, tmp_path, f"data.cache={bad}")
    with pytest.raises(ConfigError, match="data.workers must be auto or an int >= 0"):
        _cfg("tiny_iso_x4_teacher", train_dir, tmp_path, "data.workers=-1")


def test_published_configs_use_the_disk_cache():
    from kdsr.training.config import CONFIG_DIR, RunConfig

    paths = [p for p in CONFIG_DIR.glob("*.yaml") if "_M_" in p.name or "_L_" in p.name]
    paths += list(CONFIG_DIR.glob("realworld_x4_*.yaml"))
    assert len(paths) == 10 and RunConfig().data.workers == "auto"
    for path in paths:
        data = yaml.safe_load(path.read_text())["data"]
        assert data["cache"] == "disk" and "workers" not in data, path.name


def test_auto_workers_rule(monkeypatch):
    for cpus, want in ((1, 0), (2, 0), (3, 2), (5, 4), (16, 8)):
        monkeypatch.setattr(os, "sched_getaffinity", lambda _pid, n=cpus: set(range(n)), raising=False)
        assert auto_workers(1) == want
    assert auto_workers(4) == 3  # 16 CPUs shared by 4 ranks on this machine


def test_empty_train_dir_is_one_config_error_line(tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    for name in ("tiny_iso_x4_teacher", "tiny_realworld_x4_teacher"):
        with pytest.raises(ConfigError, match=r"data.train_dir: no images .* in .*empty; point it at"):
            Trainer(_cfg(name, empty, tmp_path / "runs"), progress=False)
    code = main(
        [
            "train",
            "--config",
            "tiny_iso_x4_teacher",
            "--no-progress",
            "--set",
            *tiny_overrides(empty, tmp_path),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "data.train_dir: no images" in err


def test_unwritable_disk_cache_is_one_config_error_line(train_dir, tmp_path, monkeypatch):
    import kdsr.data.cache as cache_module

    def refuse(path, write):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cache_module, "atomic_write", refuse)
    cfg = _cfg(
        "tiny_iso_x4_teacher", train_dir, tmp_path, "data.cache=disk", f"data.cache_dir={tmp_path / 'c'}"
    )
    with pytest.raises(ConfigError, match=r"^data.cache: disk: .*Permission denied.*set data.cache_dir"):
        Trainer(cfg, progress=False)


def test_teacher_is_recognised_by_type_not_by_class_name(tmp_path, monkeypatch, train_dir):
    class KDSRTeacher(torch.nn.Module):  # the right name on the wrong type
        config = {}

    teacher_file = tmp_path / "t.pt"
    teacher_file.write_bytes(b"")
    monkeypatch.setattr(build_module, "load_model", lambda *a, **k: KDSRTeacher())
    cfg = _cfg("tiny_iso_x4_student", train_dir, tmp_path, f"teacher={teacher_file}")
    with pytest.raises(ConfigError, match="not a KDSRTeacher"):
        Trainer(cfg, progress=False)


def test_trainer_imports_submodules_not_the_root_facade():
    tree = ast.parse(Path(trainer_module.__file__).read_text())
    roots = [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name == "kdsr"
    ]
    attrs = [
        n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and getattr(n.value, "id", None) == "kdsr"
    ]
    assert roots == [] and attrs == []


def test_realworld_item_continues_each_samples_generator_after_the_worker(train_dir):
    from kdsr.data.loader import RealWorldSource, iteration_seed, sample_generator
    from kdsr.data.realworld import RealWorldBatches

    def batches():
        return RealWorldBatches(train_dir, 4, gt_size=32, batch=2, crop_size=48, queue_size=4, progress=False)

    lr, hr = RealWorldSource(batches(), seed=3, length=2).finish(RealWorldSource(batches(), 3)[1], "cpu")
    ref = batches()  # the same draws by hand, one generator per sample used from crop to degradation
    gens = [sample_generator(3, 1, 0, j) for j in range(2)]
    gt = torch.stack([ref.gt_crop(g) for g in gens])
    want = ref.pairs(gt, gens, torch.Generator().manual_seed(iteration_seed(3, 1, 0)), "cpu")
    assert torch.equal(lr, want[0]) and torch.equal(hr, want[1])


class _WhereIsTheCache(torch.utils.data.Dataset):
    def __init__(self, store):
        self.store = store

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return {"iteration": i, "store": id(self.store), "pixels": self.store.array(0).ctypes.data}


def test_ram_cache_is_inherited_by_forked_workers_not_copied(train_dir):
    store = ImageStore(sorted(train_dir.glob("*.png")), "ram", progress=False)
    loader = TrainLoader(_WhereIsTheCache(store), workers=1)
    try:
        loader.start(0, 1)
        item = loader.get(0)
    finally:
        loader.close()
    # the worker sees the parent's object and pixel buffer (fork, copy-on-write, never written), not a pickle
    assert int(item["store"]) == id(store) and int(item["pixels"]) == store.array(0).ctypes.data
