"""The lean training step: host synchronisations counted, a late-detected NaN still named at its step,
the loop benchmark; on a CUDA machine also the CUDA-graph step against the eager one and a step
that never waits for the device (these skip on CPU; benchmarks/gpu_check.sh runs them on a GPU)."""
import contextlib
import json
import multiprocessing
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from benchmarks.__main__ import main as bench_main
from lib import augment, config, data, train
from lib.config import TrainConfig
from lib.runs import read_checkpoint

MODEL = "hm_resnet18"


def small(tiny_data, tmp_path, **kw):
    base = dict(model=MODEL, recipe="modern", profile="smoke", data_dir=str(tiny_data), out_dir=str(tmp_path),
                limit_train=16, batch_size=2, workers=0, seed=3, run="lean", device="cpu")  # CUDA tests: device="cuda"
    return {**base, **kw}


def test_the_loop_reads_the_device_once_per_check_every_steps(tiny_data, tmp_path):
    """8 steps with check_every 3: reads after steps 3 and 6 and at the epoch's end, nothing else."""
    trainer = train.Trainer(TrainConfig(**small(tiny_data, tmp_path, check_every=3)))
    out = trainer.time_epoch(0)
    assert out["images"] == 16 and out["syncs"] == 3
    assert 0 < out["step_s"] < out["seconds"] and "_step" not in vars(trainer)  # the host's share; the method back
    trainer = train.Trainer(TrainConfig(**small(tiny_data, tmp_path, check_every=50)))
    assert trainer.time_epoch(0)["syncs"] == 1


def test_a_nan_found_later_is_named_at_its_step_and_nothing_is_saved(tiny_data, tmp_path, monkeypatch):
    """The loss turns NaN at global step 5 of 8; the loop looks only at the epoch's end (check_every 50),
    yet the error names step 5, and the first epoch's last.pt stays as it was."""
    run = train.fit(**small(tiny_data, tmp_path, epochs=1, batch_size=4))  # steps 0..3
    good = (Path(run) / "last.pt").read_bytes()
    real = train.create_model

    def poisoned(name, **kw):
        m = real(name, **kw)
        loss, calls = m.loss, {"n": 0}

        def late(out, kp, vis):  # called once per step (evaluate() too: only at epoch ends)
            calls["n"] += 1
            return loss(out, kp, vis) * (float("nan") if calls["n"] == 2 else 1.0)
        m.loss = late
        return m

    monkeypatch.setattr(train, "create_model", poisoned)
    with pytest.raises(FloatingPointError, match=r"loss became nan at epoch 2 step 5; .*last\.pt"):
        train.fit(**small(tiny_data, tmp_path, epochs=2, batch_size=4))
    assert (Path(run) / "last.pt").read_bytes() == good
    assert read_checkpoint(Path(run) / "last.pt")["state"]["step"] == 4


@pytest.mark.parametrize("option, value, message", [
    ("check_every", 0, "--check-every: expected an integer >= 1, found 0"),
    ("pixel_ops", "gpu", "--pixel-ops: expected one of \\['workers', 'device', 'compiled'\\], found 'gpu'"),
    ("warp_on_device", True, "--warp-on-device: expected --pixel-ops device or compiled with it"),
])
def test_bad_loop_options(tiny_data, tmp_path, option, value, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**small(tiny_data, tmp_path, **{option: value})).resolved()
    with pytest.raises(ValueError, match="--pixel-ops: expected workers"):
        TrainConfig(**small(tiny_data, tmp_path, recipe="paper", pixel_ops="device")).resolved()


def test_a_cpu_step_reuses_the_memory_the_last_one_freed():
    """glibc's malloc gave a step's freed tensors back to the OS and faulted them in again in the next
    step (~10 % of an fp32 CPU step, BENCHMARKS §7n): keep_freed_memory keeps them. Measured in fresh
    processes by their page faults over five steps' worth of allocations, with and without it."""
    import platform

    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        pytest.skip("glibc's malloc only")
    script = (
        "import os, resource, sys, torch\n"
        "for k in [k for k in os.environ if k.startswith('MALLOC_')]: del os.environ[k]\n"
        "from lib.config import keep_freed_memory\n"
        "if sys.argv[1] == 'keep': assert keep_freed_memory(), 'glibc refused a setting'\n"
        "def step(): [torch.empty(n << 20, dtype=torch.uint8).fill_(1) for n in (3, 12, 24, 6)]  # then freed\n"
        "step(); f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "for _ in range(5): step()\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0, resource.getpagesize())\n")
    faults = {}
    for mode in ("default", "keep"):
        out = subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, timeout=120,
                             cwd=Path(__file__).resolve().parents[1])
        assert out.returncode == 0, out.stderr
        faults[mode], page = map(int, out.stdout.split())
    touched = 5 * (3 + 12 + 24 + 6) * 2**20 // page  # pages written over the five steps
    if faults["default"] < 0.1 * touched:
        pytest.skip(f"uninformative here: glibc's defaults fault only {faults['default']} of {touched} pages")
    # glibc 2.36, 4-KiB pages: ~11,500 of 57,600 by default, ~770 kept
    assert faults["keep"] < min(0.05 * touched, faults["default"] / 4), faults


def test_the_trainer_keeps_freed_memory_on_a_cpu(tiny_data, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(train, "keep_freed_memory", lambda: calls.append(1))
    train.Trainer(TrainConfig(**small(tiny_data, tmp_path)))
    assert calls == [1]


def test_cuda_graph_without_cuda_is_refused_in_one_line(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="--cuda-graph: expected one CUDA process"):
        train.fit(**small(tiny_data, tmp_path, cuda_graph=True))


def test_the_cuda_graph_is_on_by_default_only_where_it_can_run(tiny_data, tmp_path, monkeypatch):
    """None (auto) is off on a CPU and with fp16; on CUDA the Trainer turns it on for one process
    (test_one_gpu_trains_in_a_cuda_graph_by_default); an explicit value stays."""
    assert TrainConfig(**small(tiny_data, tmp_path, device="cpu")).resolved().cuda_graph is False
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # resolved() asks only these three
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))  # an H100
    on_cuda = lambda **kw: TrainConfig(**small(tiny_data, tmp_path, device="cuda", **kw)).resolved().cuda_graph
    assert on_cuda(amp="fp16") is False and on_cuda(amp="bf16") is None and on_cuda(amp="off") is None
    assert on_cuda(cuda_graph=False) is False and on_cuda(cuda_graph=True) is True


@pytest.mark.parametrize("capability, amp", [((7, 5), "fp16"), ((6, 0), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_auto_amp_is_bf16_only_on_cards_that_compute_it(tiny_data, tmp_path, monkeypatch, capability, amp):
    """A T4 or P100 (7.5, 6.0: Kaggle's free GPUs) trains in fp16 with the gradient scaler, eagerly; an
    A100 or H100 (8.0, 9.0) in bf16 with the CUDA graph; a CPU in bf16 only with bf16 instructions
    (AVX512-BF16 or AMX), elsewhere emulated; an explicit amp stays."""
    for caps, cpu_amp in (({"avx512_bf16": True, "amx_bf16": False}, "bf16"), ({"amx_bf16": True}, "bf16"),
                          ({"avx512_bf16": False, "avx2": True}, "off"), ({}, "off")):
        monkeypatch.setattr(torch.cpu, "get_capabilities", lambda caps=caps: caps)
        assert config.resolve_amp("auto", "cpu") == cpu_amp
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    cfg = TrainConfig(**small(tiny_data, tmp_path, device="cuda")).resolved()
    assert (cfg.amp, cfg.cuda_graph) == (amp, False if amp == "fp16" else None)
    assert TrainConfig(**small(tiny_data, tmp_path, device="cuda", amp="bf16")).resolved().amp == "bf16"


def test_a_failed_graph_capture_trains_on_without_it(tiny_data, tmp_path, monkeypatch, capsys):
    """A model the graph cannot hold gets one line and the same steps, eagerly (simulated on CPU)."""
    def refuse(*a, **k):
        raise RuntimeError("operation not permitted when stream is capturing\nmore detail")
    monkeypatch.setattr(train, "GraphStep", refuse)
    trainer = train.Trainer(TrainConfig(**small(tiny_data, tmp_path)))
    trainer.net, trainer.total, trainer.calibration = trainer.model, 10**9, None  # what time_epoch's _wrap sets
    trainer.cfg.cuda_graph = True  # past _wrap's CUDA-only check, to reach the capture
    before = [p.detach().clone() for p in trainer.model.parameters()]
    assert trainer.time_epoch(0)["images"] == 16 and trainer.graph is False
    assert "CUDA graph capture failed (operation not permitted when stream is capturing); training without it" \
        in capsys.readouterr().out
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


def test_epoch_files_are_written_behind_training_and_all_there_when_fit_returns(tiny_data, tmp_path, monkeypatch):
    """The end-of-epoch writes run in their own thread on CPU copies, one at a time and in order
    (a slow disk, 0.3 s per file here, does not stop the next epoch from starting), and fit()
    returns, or raises the writer's error, only after the last write."""
    real = train.Run.save_checkpoint
    order = []

    def slow(self, which, state):
        time.sleep(0.3)
        order.append((which, state["state"]["step"], threading.current_thread().name))
        real(self, which, state)

    monkeypatch.setattr(train.Run, "save_checkpoint", slow)
    run = train.fit(**small(tiny_data, tmp_path, epochs=3, batch_size=4))
    assert [s for w, s, _ in order if w == "last"] == [4, 8, 12]
    assert all(name.startswith("checkpoint") for _, _, name in order)
    ck = read_checkpoint(Path(run) / "last.pt")
    assert ck["state"]["step"] == 12 and len(ck["history"]) == 3
    assert all(not t.is_cuda for t in ck["model"].values())
    # trained without BatchNorm's counters (one kernel per layer and step less), saved with them
    counters = [k for k in ck["model"] if k.endswith("num_batches_tracked")]
    assert counters and {k for k in ck["ema"] if k.endswith("num_batches_tracked")} == set(counters)
    assert train.Trainer(TrainConfig(**small(tiny_data, tmp_path, run="n"))).model.backbone.bn1.num_batches_tracked is None
    assert hasattr(train.cpu_copy(train.Trainer(TrainConfig(**small(tiny_data, tmp_path, run="m"))).model.state_dict()),
                   "_metadata")

    def broken(self, which, state):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(train.Run, "save_checkpoint", broken)
    with pytest.raises(OSError, match="No space left"):
        train.fit(**small(tiny_data, tmp_path, run="full_disk", epochs=2, batch_size=4))


@pytest.mark.parametrize("warp", [False, True])
def test_pixel_ops_on_the_device_train_on_cpu_tensors_too(tiny_data, tmp_path, warp):
    """--pixel-ops device (the CUDA default), and with --warp-on-device, run through the whole loop;
    here on CPU tensors. The network always gets 128 px crops."""
    trainer = train.Trainer(TrainConfig(**small(tiny_data, tmp_path, pixel_ops="device", warp_on_device=warp)))
    batch = next(iter(trainer.train_loader))
    assert "pixel" in batch and batch["image"].shape[-1] == (192 if warp else 128)
    assert train.to_input(batch, "cpu", True).shape == (2, 3, 128, 128)
    assert trainer.time_epoch(0)["images"] == 16


def test_workers_keep_to_one_thread_each(tiny_data, tmp_path, monkeypatch):
    """Forked workers would each run OpenCV/BLAS pools of one thread per core (N x cores threads)."""
    code = ("import cv2, torch; from lib import data; data.worker_init(); "
            "from threadpoolctl import threadpool_info; "
            "print(cv2.getNumThreads(), torch.get_num_threads(), max([p['num_threads'] for p in threadpool_info()] or [1]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=train.REPO, check=True)
    assert out.stdout.split() == ["1", "1", "1"]
    trainer = train.Trainer(TrainConfig(**small(tiny_data, tmp_path, workers=1)))
    assert trainer.train_loader.worker_init_fn is data.worker_init
    monkeypatch.setattr(config.os, "cpu_count", lambda: 16)
    assert config.default_workers() == 15


def test_fit_and_close_stop_the_workers_at_once(tiny_data, tmp_path):
    """Persistent workers left to the garbage collector or to exit cost PyTorch's 5-s join timeout
    each (75 s for 15 workers on the H100): fit() stops them itself, close() does for a trainer used
    through time_epoch (python -m benchmarks loop)."""
    before = set(multiprocessing.active_children())
    train.Trainer(TrainConfig(**small(tiny_data, tmp_path, workers=2, epochs=1))).fit()
    assert set(multiprocessing.active_children()) <= before
    trainer = train.Trainer(TrainConfig(**small(tiny_data, tmp_path, workers=2, run="timed")))
    trainer.time_epoch(0)
    assert len(set(multiprocessing.active_children()) - before) == 2
    start = time.perf_counter()
    trainer.close()
    assert time.perf_counter() - start < 5.0  # left to the join timeouts: 2 x 5 s; room for a busy machine
    assert set(multiprocessing.active_children()) <= before


def test_the_gpu_profile_trains_only_the_modern_model_on_the_full_synthetic_set(tiny_data):
    from lib import pipeline

    steps = pipeline.select_steps("gpu")
    assert "07_hm_resnet18" in steps and "08_ensemble_submit" in steps and "data" in steps
    assert not {"03_irv2", "04_resnet34", "05_cpm", "06_inception_v3"} & set(steps)
    assert "03_irv2" in pipeline.select_steps("gpu", only=["03_irv2"])
    assert "03_irv2" in pipeline.select_steps("cpu")
    assert config.synthetic_dir("gpu") == config.synthetic_dir("full")
    assert config.synthetic_stamp("gpu") == config.synthetic_stamp("full")
    cfg = TrainConfig(model="hm_resnet18_64", profile="gpu", data_dir=str(tiny_data)).resolved()
    assert (cfg.budget_minutes, cfg.limit_val, cfg.batch_size) == (3.0, 1000, 32)


def test_loop_benchmark_cli(tiny_data, tmp_path, capsys):
    """The table into --out; with --csv the rows also after those the file held (gpu_check.sh's calls
    share one file for `benchmarks targets`)."""
    import pandas as pd

    out, csv = tmp_path / "B.md", tmp_path / "loop.csv"
    pd.DataFrame([{"model": "an earlier call's", "batch": 8}]).to_csv(csv, index=False)
    assert bench_main(["loop", "--models", MODEL, "--steps", "2", "--batch", "4", "--data-dir", str(tiny_data),
                       "--amp", "off,bf16", "--out", str(out), "--csv", str(csv)]) == 0
    rows_csv = pd.read_csv(csv)
    assert rows_csv["model"].tolist() == ["an earlier call's", MODEL, MODEL]
    assert rows_csv["amp"].tolist()[1:] == ["off", "bf16"] and (rows_csv["loop img/s"].iloc[1:] > 0).all()
    text = out.read_text()
    assert "loop / model" in text and "forward + backward (ms)" in text and "waiting for data (ms)" in text
    assert "model ops / step" in text and "µs / op" in text
    header, *rows = [[c.strip() for c in line.strip("|").split("|")] for line in text.splitlines()
                     if line.startswith("| ") and "---" not in line]
    rows = [dict(zip(header, r)) for r in rows]
    assert [r["amp"] for r in rows] == ["off", "bf16"]  # a row per precision, each with its own model-only step
    assert int(rows[1]["model ops / step"]) > int(rows[0]["model ops / step"])  # bf16 adds the weights' casts
    assert bench_main(["loop", "--cuda-graph", "maybe"]) == 2
    assert "--cuda-graph: expected comma-separated names from off, on" in capsys.readouterr().err
    assert bench_main(["loop", "--amp", "fp8"]) == 2
    assert "--amp: expected comma-separated names from auto, bf16, fp16, off" in capsys.readouterr().err


def test_cache_on_device_draws_its_batches_in_the_main_process(tiny_data, tmp_path):
    """--cache-on-device: no DataLoader; the main process draws each batch (lib.data.DrawnBatches) and
    the device gathers the images by index. Its exact crops (the ramp) give the inputs the workers'
    batches give; its augmented samples carry labels that the warp they carry puts on the same
    joints as the CPU pipeline's warp with that matrix (cv2), and a batch is the same when drawn again."""
    kw = dict(batch_size=8, pixel_ops="device", warp_on_device=True)
    trainers = [train.Trainer(TrainConfig(**small(tiny_data, tmp_path / str(on), cache_on_device=on, **kw)))
                for on in (False, True)]
    for t in trainers:
        t.batches.aug_share = lambda step: 0.5
        t.batches.set_epoch(0)
    workers, drawn = trainers
    assert isinstance(drawn.train_loader, data.DrawnBatches) and not hasattr(drawn.train_loader, "num_workers")
    a, b = next(iter(workers.train_loader)), next(iter(drawn.train_loader))
    assert "image" in a and "image" not in b
    exact = b["exact"]
    assert exact.dtype == torch.bool and 0 < int(exact.sum()) < 8
    torch.testing.assert_close(b["index"], a["index"], rtol=0, atol=0)
    torch.testing.assert_close(b["vis"], a["vis"], rtol=0, atol=0)
    xa = train.to_input(a, "cpu", False)
    xb = train.to_input(b, "cpu", False, images=drawn.images)
    torch.testing.assert_close(xb[exact], xa[exact], rtol=0, atol=0)
    torch.testing.assert_close(b["kp"][exact], a["kp"][exact], rtol=0, atol=0)
    # augmented samples: the labels follow the warp the batch carries, as lib.augment's CPU warp makes them
    cache, aug = drawn.train_loader.cache, drawn.train_ds.augment
    for k in np.flatnonzero(~exact.numpy()).tolist():
        i = int(b["index"][k])
        inv = np.vstack([b["pixel"][k, augment.PIXEL_LAYOUT["warp"]].double().numpy().reshape(2, 3), [0, 0, 1]])
        _, p, s = aug._finish(np.asarray(cache.ctx[i]), cache.ctx_kp[i].astype(np.float64), float(cache.scale[i]),
                              np.linalg.inv(inv))
        np.testing.assert_allclose(b["kp"][k].numpy(), data.label_from_pixels(p, s), atol=1e-3)
    drawn.batches.set_epoch(0)
    again = next(iter(drawn.train_loader))
    for key in b:
        torch.testing.assert_close(again[key], b[key], rtol=0, atol=0)


def test_the_images_go_to_the_device_by_default_on_cuda_only(tiny_data, tmp_path, monkeypatch):
    """On the H100 the workers' transport capped the loop; with the warp and the images on the device
    the loop reached 0.69-0.91 of the model alone (BENCHMARKS 7c). So CUDA runs of the modern
    augmentation do it unless told otherwise, the images only when they take at most half the free
    device memory."""
    def resolved(**kw):
        c = TrainConfig(**small(tiny_data, tmp_path, pixel_ops="auto", **kw)).resolved()
        return c.pixel_ops, c.warp_on_device, c.cache_on_device

    assert resolved() == ("workers", False, False)
    monkeypatch.setattr(config, "resolve_device", lambda device: "cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))  # an H100
    assert resolved() == ("device", True, None)  # None: the Trainer decides by the memory
    assert resolved(warp_on_device=False) == ("device", False, False)
    assert resolved(cache_on_device=False) == ("device", True, False)
    assert resolved(recipe="paper") == ("workers", False, False)
    hands = range(1000)
    need = data.DeviceImages.nbytes(hands)
    assert need == 1000 * 3 * (192 ** 2 + 128 ** 2)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2 * need, 4 * need))
    assert data.DeviceImages.fits(hands, "cuda", share=0.5)
    assert not data.DeviceImages.fits(range(1001), "cuda", share=0.5)
    assert not data.DeviceImages.fits(hands, "cpu", share=0.5)


def test_cache_on_device_on_a_cpu_needs_the_memory_for_its_copy(tiny_data, tmp_path, monkeypatch):
    """--cache-on-device on a CPU copies the images into the process: refused in one line where they
    would not fit in the memory available (9.2 GB for the real hands), before any copy."""
    import psutil

    cache = data.build_cache(data.find_data(tiny_data).training)
    need = data.DeviceImages.nbytes(cache)
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("Mem", (), {"available": need})())
    with pytest.raises(data.DataError, match=r"--cache-on-device: expected .* GiB of free memory \(and a quarter more "
                                             r"to spare\) for the 67 hands of .* on the CPU, found .* GiB available; "
                                             r"train without it"):
        data.DeviceImages(cache, "cpu")
    monkeypatch.setattr(psutil, "virtual_memory", lambda: type("Mem", (), {"available": 2 * need})())
    assert len(data.DeviceImages(cache, "cpu").ctx) == len(cache)
    # in a container the cgroup's limit counts, not the host's memory psutil reports
    cg = tmp_path / "cgroup"
    cg.mkdir()
    (cg / "memory.max").write_text(f"{need + 1000}\n")
    (cg / "memory.current").write_text("1000\n")
    assert data.available_memory(cg) == need
    (cg / "memory.max").write_text("max\n")
    assert data.available_memory(cg) == 2 * need


def test_cache_on_device_needs_the_warp_on_device(tiny_data, tmp_path):
    with pytest.raises(ValueError, match="--cache-on-device: expected --warp-on-device with it"):
        train.fit(**small(tiny_data, tmp_path, pixel_ops="device", cache_on_device=True))


# ------------------------------------------------------------------- CUDA only (gpu_check.sh)

def _two_epochs(trainer: train.Trainer, net, each=None) -> torch.Tensor:
    """Each step's training-loss sum over two epochs at lr 1e-3 (the device read after every step);
    each(batch) after each step."""
    seen, run = 0.0, []
    for epoch in range(2):
        trainer.batches.set_epoch(epoch)
        for batch in trainer.train_loader:
            trainer._step(net, batch, 1e-3)
            total = trainer._read_loss()
            run.append(total - seen)
            seen = total
            if each is not None:
                each(batch)
        trainer.meter.sums.zero_()
        seen = 0.0
    return torch.tensor(run)


def _trainer(tiny_data, tmp_path, **kw) -> train.Trainer:
    return train.Trainer(TrainConfig(**small(tiny_data, tmp_path, device="cuda", batch_size=4, **kw)))


@pytest.mark.gpu
@pytest.mark.parametrize("model, sampler, on_device", [("hm_resnet18", "shuffle", False), ("resnet34", "shuffle", False),
                                                       ("hm_resnet18", "window", False), ("hm_resnet18", "shuffle", True),
                                                       ("hm_resnet18", "shuffle", "compiled")])
def test_cuda_graph_steps_equal_eager_steps(tiny_data, tmp_path, model, sampler, on_device):
    """Eight steps replayed from the graph follow the eager steps (fp32, no EMA, lr 1e-3): the same
    losses step by step, and all but a few weights equal (Adam turns a near-zero gradient's rounding
    into a full step, so a handful may differ). With the window sampler each epoch ends in a short
    batch, stepped eagerly between the replays (the capturable optimizer outside the graph). on_device:
    the images, the warp and the pixel ops on the GPU, inside the graph (the CUDA defaults); "compiled":
    those pixel ops through torch.compile (`--pixel-ops compiled`), compiled in the warm-up, then captured."""
    pixel_ops = on_device if isinstance(on_device, str) else "device" if on_device else "workers"
    kw = dict(model=model, amp="off", ema=0.0, sampler=sampler, limit_train=18 if sampler == "window" else 16,
              pixel_ops=pixel_ops, **(dict(warp_on_device=True, cache_on_device=True) if on_device else {}))
    losses, weights, sizes = [], [], []
    for graph in (False, True):
        torch.manual_seed(0)
        trainer = _trainer(tiny_data, tmp_path / str(graph), cuda_graph=graph, **kw)
        run = _two_epochs(trainer, trainer._wrap(), lambda batch: sizes.append(len(batch["kp"])) if graph else None)
        if graph:  # captured with its input (a capture falls back quietly: then this test would prove less)
            assert isinstance(trainer.graph, train.GraphStep) and trainer.graph.with_input
            assert sorted(trainer.graph.inputs) == (["exact", "index", "noise", "pixel"] if on_device else ["image"])
        losses.append(run)
        weights.append(torch.cat([p.detach().float().cpu().reshape(-1) for p in trainer.model.parameters()]))
        trainer.close()
    assert sizes == ([4, 4, 4, 4, 2] * 2 if sampler == "window" else [4] * 8)
    assert torch.allclose(losses[0], losses[1], rtol=2e-3), (losses[0], losses[1])
    assert ((weights[0] - weights[1]).abs() > 1e-4).float().mean() < 0.01


@pytest.mark.gpu
def test_one_gpu_trains_in_a_cuda_graph_by_default(tiny_data, tmp_path):
    """No --cuda-graph given: a one-GPU run captures its step, and its config.json says so."""
    trainer = _trainer(tiny_data, tmp_path)
    assert trainer.cfg.cuda_graph is True
    trainer._step(trainer._wrap(), next(iter(trainer.train_loader)), 1e-3)
    assert isinstance(trainer.graph, train.GraphStep)
    trainer.close()
    run = train.fit(**small(tiny_data, tmp_path, device="cuda", batch_size=4, epochs=1, run="default_graph"))
    assert json.loads((Path(run) / "config.json").read_text())["cuda_graph"] is True


@pytest.mark.gpu
def test_an_eager_run_resumes_in_the_cuda_graph(tiny_data, tmp_path, capsys):
    """A run saved without the graph (--no-cuda-graph, a CPU's, fp16) trains on in it on one GPU: the
    optimizer keeps this run's capturable=True (loading the saved groups set False, and the capture failed)."""
    kw = small(tiny_data, tmp_path, device="cuda", batch_size=4, run="eager_then_graph")
    train.fit(**kw, epochs=1, cuda_graph=False)
    capsys.readouterr()
    run = Path(train.fit(**kw, epochs=2))
    out = capsys.readouterr().out
    assert "resuming from epoch 1" in out and "CUDA graph of the step captured" in out and "capture failed" not in out
    assert read_checkpoint(run / "last.pt")["optimizer"]["param_groups"][0]["capturable"] is True


@pytest.mark.gpu
def test_fp16_trains_eagerly_with_the_gradient_scaler_on_cuda(tiny_data, tmp_path):
    """What auto amp picks on a T4 or P100 (test_auto_amp_is_bf16_only_on_cards_that_compute_it)."""
    run = Path(train.fit(**small(tiny_data, tmp_path, device="cuda", batch_size=4, epochs=2, amp="fp16", run="fp16")))
    cfg = json.loads((run / "config.json").read_text())
    assert (cfg["amp"], cfg["cuda_graph"]) == ("fp16", False)
    log = pd.read_csv(run / "log.csv")
    assert len(log) == 2 and np.isfinite(log["train_loss"]).all() and np.isfinite(log["val_loss"]).all()
    assert read_checkpoint(run / "last.pt")["scaler"]["scale"] > 0
    # a bf16 run (no scaler state saved) resumed in fp16 starts a fresh scale
    kw = small(tiny_data, tmp_path, device="cuda", batch_size=4, run="bf16_then_fp16")
    train.fit(**kw, epochs=1, amp="bf16")
    run = Path(train.fit(**kw, epochs=2, amp="fp16"))
    assert read_checkpoint(run / "last.pt")["scaler"]["scale"] > 0 and len(pd.read_csv(run / "log.csv")) == 2


@pytest.mark.gpu
@pytest.mark.parametrize("graph, warp, cache", [(False, False, False), (True, False, False), (False, True, False),
                                                (True, True, True)])
def test_a_cuda_step_never_waits_for_the_device(tiny_data, tmp_path, graph, warp, cache):
    """Steps (pixel ops, and the warp, on the device, the images gathered there, bf16, clipping,
    fused AdamW, EMA) under sync debug mode "error"."""
    trainer = _trainer(tiny_data, tmp_path, cuda_graph=graph, pixel_ops="device", warp_on_device=warp,
                       cache_on_device=cache)
    net = trainer._wrap()
    batches = iter(trainer.train_loader)
    trainer._step(net, next(batches), 1e-3)  # the first step captures the graph (which synchronises)
    assert not graph or (isinstance(trainer.graph, train.GraphStep) and trainer.graph.with_input)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for batch in batches:
            trainer._step(net, batch, 1e-3)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert trainer._read_loss() > 0




def test_the_cuda_graph_is_captured_on_a_whole_batch(tiny_data, tmp_path, monkeypatch):
    """A run whose first step has a short batch (resumed at the window sampler's last) steps it eagerly
    and captures the graph at the first whole batch, which the whole batches then replay (simulated on CPU)."""
    captured = []

    class Recorded:  # GraphStep's interface, stepping eagerly
        def __init__(self, trainer, net, batch, with_input=True):
            captured.append(len(batch["kp"]))
            self.trainer, self.net, self.n = trainer, net, len(batch["kp"])

        def fits(self, batch):
            return len(batch["kp"]) == self.n

        def __call__(self, batch, mark=None):
            t = self.trainer
            x = train.to_input(batch, "cpu", t.cfg.channels_last, images=t.images)
            return t._update(self.net, x, batch["kp"], batch["vis"])

    monkeypatch.setattr(train, "GraphStep", Recorded)
    trainer = train.Trainer(TrainConfig(**small(tiny_data, tmp_path, batch_size=8)))
    trainer.cfg.cuda_graph = True  # past _wrap's CUDA-only check, to reach the capture
    batch = next(iter(trainer.train_loader))
    short = {k: v[:3] if torch.is_tensor(v) else v for k, v in batch.items()}
    trainer._step(trainer.model, short, 1e-3)
    assert trainer.graph is None and captured == []
    trainer._step(trainer.model, batch, 1e-3)
    trainer._step(trainer.model, batch, 1e-3)
    assert isinstance(trainer.graph, Recorded) and captured == [8] and trainer.state["step"] == 3
    trainer.close()


class _ReplayedOnCpu:
    """torch.cuda.CUDAGraph emulated on a CPU: `replay` runs the captured step again (set by the test)."""
    step = None

    def replay(self):
        self.step()


def _graphs_on_cpu(monkeypatch) -> None:
    """GraphStep's CUDA calls on a CPU: streams do nothing; capturing runs the step once (undone by
    GraphStep, as its warm-up is); a replay runs GraphStep's step on its own tensors again."""
    init = train.GraphStep.__init__

    def init_and_link(self, *a, **k):
        init(self, *a, **k)
        self.graph.step = lambda: self.loss.copy_(self._body())

    monkeypatch.setattr(train.GraphStep, "__init__", init_and_link)

    class Stream:
        def wait_stream(self, other):
            pass

    for name, fake in (("Stream", Stream), ("current_stream", lambda *a, **k: Stream()),
                       ("stream", lambda *a, **k: contextlib.nullcontext()),
                       ("graph", lambda *a, **k: contextlib.nullcontext()), ("CUDAGraph", _ReplayedOnCpu),
                       ("synchronize", lambda *a, **k: None)):
        monkeypatch.setattr(torch.cuda, name, fake)


def _refuse_the_inputs_capture(monkeypatch) -> None:
    """GraphStep's capture with the input fails as an op the graph cannot hold would; without it, it works."""
    init = train.GraphStep.__init__

    def refuse_input(self, trainer, net, batch, with_input=True):
        if with_input:
            raise RuntimeError("operation not permitted when stream is capturing\nmore")
        init(self, trainer, net, batch, with_input)

    monkeypatch.setattr(train.GraphStep, "__init__", refuse_input)


@pytest.mark.parametrize("on_device, with_input", [(True, True), (False, True), (True, False)])
def test_the_graph_replays_each_batchs_own_input(tiny_data, tmp_path, monkeypatch, on_device, with_input):
    """GraphStep itself, its CUDA calls emulated on the CPU (a replay runs the step again on the
    graph's own tensors). With the images, the warp and the pixel ops in the graph (on_device), with
    the workers' images, or with the input assembled eagerly (with_input=False, the fallback): ten
    steps over two epochs of the window sampler (a short batch stepped eagerly between the replays;
    exact and augmented crops mixed by the ramp) equal the eager ones; after each replay the graph's
    tensors hold that batch's input and labels; and the warm-up leaves no trace."""
    _graphs_on_cpu(monkeypatch)
    if not with_input:  # the fallback path of Trainer._capture: the input's capture fails
        _refuse_the_inputs_capture(monkeypatch)
    kw = dict(amp="off", ema=0.0, batch_size=4, limit_train=18, sampler="window", augment_ramp=1.0,
              channels_last=False, **(dict(pixel_ops="device", warp_on_device=True, cache_on_device=True) if on_device else {}))
    losses, weights, exact = [], [], set()
    for graph in (False, True):
        torch.manual_seed(0)
        trainer = train.Trainer(TrainConfig(**small(tiny_data, tmp_path / str(graph), **kw)))
        net = trainer._wrap()
        trainer.cfg.cuda_graph, trainer.total = graph, 10  # past _wrap's CUDA-only check; the ramp's length
        for g in trainer.optimizer.param_groups:  # the graph's tensor lr in both: it rounds Adam's step otherwise
            g["lr"] = torch.tensor(float(g["lr"]))

        def check(batch, trainer=trainer, graph=graph):
            exact.update(batch["exact"].tolist() if "exact" in batch else [])
            g = trainer.graph
            if graph and g.fits(batch):  # the graph's tensors hold this batch
                fresh = train.stage(batch, "cpu")
                want = fresh if with_input else {"x": g._assemble(fresh)}
                assert g.inputs.keys() == want.keys() and all(torch.equal(g.inputs[k], want[k]) for k in want)
                assert torch.equal(g.kp, batch["kp"]) and torch.equal(g.vis, batch["vis"])

        run = _two_epochs(trainer, net, check)
        if graph:
            assert isinstance(trainer.graph, train.GraphStep) and trainer.graph.with_input == with_input
            assert sorted(trainer.graph.inputs) == (["x"] if not with_input else
                                                    ["exact", "index", "noise", "pixel"] if on_device else ["image"])
        losses.append(run)
        weights.append(torch.cat([p.detach().reshape(-1) for p in trainer.model.parameters()]))
        trainer.close()
    assert len(losses[0]) == 10 and losses[0].std() > 0
    assert exact == ({True, False} if on_device else set())
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(weights[1], weights[0], rtol=1e-5, atol=1e-6)


def test_a_graph_without_its_input_when_the_inputs_capture_fails(tiny_data, tmp_path, monkeypatch, capsys):
    """The input's capture failing costs the input its graph, not the step: one line says so."""
    _graphs_on_cpu(monkeypatch)
    _refuse_the_inputs_capture(monkeypatch)
    trainer = train.Trainer(TrainConfig(**small(tiny_data, tmp_path, batch_size=4)))
    net = trainer._wrap()
    trainer.cfg.cuda_graph = True
    trainer._step(net, next(iter(trainer.train_loader)), 1e-3)
    out = capsys.readouterr().out
    assert "CUDA graph capture of the input failed (operation not permitted when stream is capturing); " \
           "its ops will run eagerly, capturing the step without them" in out, out
    assert "CUDA graph of the step (the input eagerly) captured" in out.split("capturing the step without them")[1]
    assert trainer.graph.with_input is False
    trainer.close()


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))
