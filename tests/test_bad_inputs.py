"""Every bad input is one clear line: damaged copies of the tiny competition files, bad options, broken
caches and credentials, each through the command lines (lib.cli: `error: ...` on stderr, exit code 2)."""
import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from lib import cli, data, submit
from tests.conftest import fake_rhd

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- helpers


def copy_data(tiny_data: Path, dst: Path) -> Path:
    """A private copy of the competition files (tiny_data itself is never modified)."""
    dst.mkdir(parents=True, exist_ok=True)
    for name in ("training.h5", "testing.h5", "solution.csv"):
        shutil.copy(tiny_data / name, dst / name)
    return dst


def rewrite(path: Path, group: str, compression: str | None = None, **arrays) -> None:
    """Replace an .h5 file by one group of arrays (chunked by entry, optionally compressed)."""
    with h5py.File(path, "w") as f:
        g = f.create_group(group)
        for k, v in arrays.items():
            chunks = (1, *v.shape[1:]) if k == "img" and len(v) else None
            g.create_dataset(k, data=v, chunks=chunks, compression=compression)


def train_arrays(tiny_data: Path) -> dict:
    with h5py.File(tiny_data / "training.h5") as f:
        return {k: f[f"train/{k}"][...] for k in ("img", "kp_2D", "vis_2D")}


def read_test_images(tiny_data: Path) -> np.ndarray:
    with h5py.File(tiny_data / "testing.h5") as f:
        return f["test/img"][...]


def corrupt_chunk(d: Path, tiny_data: Path, entry: int = 5) -> None:
    """training.h5 with gzip chunks, one of them overwritten with junk (h5py raises OSError reading it)."""
    rewrite(d / "training.h5", "train", "gzip", **train_arrays(tiny_data))
    with h5py.File(d / "training.h5") as f:
        info = f["train/img"].id.get_chunk_info_by_coord((entry, 0, 0, 0))
    with open(d / "training.h5", "r+b") as fh:
        fh.seek(info.byte_offset + 64)
        fh.write(b"\xff" * 256)


def one_error_line(capsys, code: int) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    return lines[0]


# --------------------------------------------------------------------------- lib.cli itself


@pytest.mark.parametrize("exc, words", [
    (data.DataError("x.h5: train/img: expected 1, found 0"), ["x.h5: train/img: expected 1, found 0"]),
    (submit.SubmissionError("s.csv: rows: expected 3, found 2"), ["s.csv: rows"]),
    (submit.KaggleError("no Kaggle credentials"), ["no Kaggle credentials"]),
    (FileNotFoundError(2, "No such file or directory", "/nope/a.h5"), ["/nope/a.h5: No such file or directory"]),
    (IsADirectoryError(21, "Is a directory", "/tmp"), ["/tmp: Is a directory"]),
    (PermissionError(13, "out is not writable (Permission denied)", "out"), ["out is not writable"]),
    (OSError("Can't synchronously read data (filter returned failure during read)"), ["filter returned failure"]),
    (KeyError("train/img"), ["key 'train/img' not found"]),
    (ValueError("first line\nsecond line"), ["first line; second line"]),
    (FloatingPointError("overflow in loss"), ["overflow in loss"]),
])
def test_run_turns_expected_errors_into_one_line(capsys, monkeypatch, exc, words):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)

    def boom():
        raise exc

    line = one_error_line(capsys, cli.run(boom))
    assert all(w in line for w in words), line


def test_a_write_that_cannot_start_names_the_file_asked_for(tmp_path, capsys):
    """Not the hidden temporary file beside it (.x.json.abc123.tmp.json), and a folder given for a file
    says so."""
    from lib import io

    if not Path("/proc/self").exists():
        pytest.skip("no /proc here")
    line = one_error_line(capsys, cli.run(io.write_json, "/proc/handjoints_x/run.json", {}))
    assert line.startswith("error: /proc/handjoints_x/run.json: cannot write there (") and ".tmp" not in line, line
    line = one_error_line(capsys, cli.run(io.write_json, tmp_path, {}))
    assert line == f"error: {tmp_path}: expected a file to write, found a directory", line


def test_run_exit_codes_debug_and_bugs(capsys, monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    assert cli.run(lambda: None) == 0 and cli.run(lambda a, b=0: a + b, 3, b=4) == 7

    def interrupted():
        raise KeyboardInterrupt

    assert cli.run(interrupted) == 130 and capsys.readouterr().err.strip() == "interrupted"
    with pytest.raises(ZeroDivisionError):  # a bug keeps its traceback
        cli.run(lambda: 1 / 0)

    class Custom(Exception):
        pass

    def custom():
        raise Custom("mine")

    assert cli.run(custom, expected=(Custom,)) == 2 and "error: mine" in capsys.readouterr().err
    monkeypatch.setenv(cli.DEBUG_ENV, "1")
    with pytest.raises(data.DataError):
        cli.run(lambda: (_ for _ in ()).throw(data.DataError("x")))


def test_real_command_line_and_debug_traceback(tmp_path):
    cmd = [sys.executable, "-m", "lib.data", "info", str(tmp_path / "nothing")]
    env = {k: v for k, v in os.environ.items() if k != cli.DEBUG_ENV}
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "training.h5" in r.stderr and "not found" in r.stderr
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env={**env, cli.DEBUG_ENV: "1"}, timeout=120)
    assert r.returncode == 1 and "Traceback" in r.stderr and "FileNotFoundError" in r.stderr


# --------------------------------------------------------------------------- damaged competition files


def _tiled_test(tiny_data, entry, value):
    img = np.concatenate([read_test_images(tiny_data)] * 7)  # 70 crops: the bad one is beyond the first 64
    img[entry, 1, 7, 9] = value
    return img


DATA_CASES = {
    # name: (damage(d, tiny_data), argv after the data dir, words of the line)
    "corrupt compressed chunk, info": (lambda d, t: corrupt_chunk(d, t, 5), ["info"],
                                       ["training.h5", "train/img entry 5", "damaged chunk"]),
    "corrupt compressed chunk, cache": (lambda d, t: corrupt_chunk(d, t, 5), ["cache"],
                                        ["training.h5", "train/img entry 5", "damaged chunk"]),
    "zero-entry training.h5": (
        lambda d, t: rewrite(d / "training.h5", "train", **{k: v[:0] for k, v in train_arrays(t).items()}),
        ["info"], ["training.h5: train/img: expected at least 1 entry", "found 0"]),
    "zero-entry testing.h5": (
        lambda d, t: rewrite(d / "testing.h5", "test", img=np.zeros((0, 3, 128, 128), np.float32)),
        ["info"], ["testing.h5: test/img: expected at least 1 entry", "found 0"]),
    "test pixel > 255 in entry 66": (
        lambda d, t: rewrite(d / "testing.h5", "test", img=_tiled_test(t, 66, 300.0)),
        ["info"], ["testing.h5: test/img: expected finite pixel values in 0..255", "300 in entry 66"]),
    "test pixel < 0 in entry 69": (
        lambda d, t: rewrite(d / "testing.h5", "test", img=_tiled_test(t, 69, -1.0)),
        ["info"], ["test/img", "-1..", "in entry 69"]),
    "test pixel NaN in entry 65": (
        lambda d, t: rewrite(d / "testing.h5", "test", img=_tiled_test(t, 65, np.nan)),
        ["info"], ["test/img", "NaN/inf in entry 65"]),
    "degenerate hand": (
        lambda d, t: rewrite(d / "training.h5", "train", **{**train_arrays(t), "kp_2D": np.where(
            np.arange(len(train_arrays(t)["kp_2D"]))[:, None, None] == 3, 100.0, train_arrays(t)["kp_2D"])}),
        ["cache"], ["training.h5: train/kp_2D", "degenerate", "entry 3 at (100.0, 100.0)"]),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_damaged_competition_files_are_one_line(tiny_data, tmp_path, capsys, monkeypatch, case):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    damage, args, words = DATA_CASES[case]
    d = copy_data(tiny_data, tmp_path / "d")
    damage(d, tiny_data)
    line = one_error_line(capsys, data.main([args[0], str(d), *args[1:]]))
    assert all(w in line for w in words), line


def test_test_values_checked_in_bounded_chunks(tiny_data, tmp_path, monkeypatch):
    d = copy_data(tiny_data, tmp_path / "d")
    rewrite(d / "testing.h5", "test", img=_tiled_test(tiny_data, 0, 1.0))
    reads = []
    real = data.TestingFile.read

    def spy(self, idx):
        out = real(self, idx)
        reads.append(len(out))
        return out

    monkeypatch.setattr(data, "VALUE_CHUNK", 16)
    monkeypatch.setattr(data.TestingFile, "read", spy)
    with data.TestingFile(d / "testing.h5", "rgb", verbose=False) as tf:
        assert len(tf) == 70
    assert sum(reads) == 70 and max(reads) == 16  # every crop, 16 at a time


def test_one_hand_leaves_no_training_split(tiny_data, tmp_path):
    d = copy_data(tiny_data, tmp_path / "d")
    rewrite(d / "training.h5", "train", **{k: v[:1] for k, v in train_arrays(tiny_data).items()})
    cache = data.build_cache(d / "training.h5", tmp_path / "cache")
    with pytest.raises(data.DataError, match="expected at least 2 source images.*found 1.*no hand would be left") as e:
        data.load_or_make_split(d, cache.image_ids, "src")
    assert str(d) in str(e.value) and not (d / "split.json").exists()
    with pytest.raises(ValueError, match="at least 2 source images"):
        data.make_split(np.zeros(3, int))


def test_build_skips_a_degenerate_hand_with_a_line(tmp_path, capsys):
    rhd = fake_rhd(tmp_path / "rhd", n_train=3, n_eval=2, seed=4)
    for split in ("training", "evaluation"):
        path = rhd / split / f"anno_{split}.pickle"
        anno = pickle.loads(path.read_bytes())
        anno[0]["uv_vis"][:21, :2] = (150.0, 160.0)  # frame 0, left hand: every keypoint at one point
        path.write_bytes(pickle.dumps(anno))
    summary = data.build_competition(rhd, tmp_path / "comp")
    err = capsys.readouterr().err
    assert "anno_training.pickle: [0] left hand: every keypoint at one point (150.0, 160.0); skipped" in err
    assert "anno_evaluation.pickle: [0] left hand" in err
    with data.TrainingFile(tmp_path / "comp" / "training.h5", verbose=False) as tf:
        assert len(tf) == summary["train_hands"] and not data.degenerate_hands(tf.kp).any()


# --------------------------------------------------------------------------- caches and split


@pytest.mark.parametrize("damage, words", [
    pytest.param(lambda c: (c / "ctx.u8").write_bytes((c / "ctx.u8").read_bytes()[:1000]),
                 ["ctx.u8: expected", "found 1000 bytes"], id="ctx.u8 truncated"),
    pytest.param(lambda c: (c / "crop.u8").write_bytes(b""), ["crop.u8: expected", "found 0 bytes"],
                 id="crop.u8 empty"),
    pytest.param(lambda c: (c / "ctx.u8").unlink(), ["ctx.u8: expected", "found no file"], id="ctx.u8 missing"),
    pytest.param(lambda c: (c / "meta.npz").write_bytes(b"PK junk"), ["meta.npz: expected", "unreadable"],
                 id="meta.npz corrupt"),
    pytest.param(lambda c: (c / "info.json").write_text('{"n": '), ["info.json: expected", "unreadable"],
                 id="info.json truncated"),
])
def test_damaged_crop_cache_is_rebuilt_with_a_line(tiny_data, tmp_path, capsys, damage, words):
    training = tmp_path / "training.h5"  # a small copy: two cache builds per case
    rewrite(training, "train", **{k: v[:12] for k, v in train_arrays(tiny_data).items()})
    cache = data.build_cache(training, tmp_path / "cache")
    good = np.array(cache.ctx[-1]), np.array(cache.crop[-1])
    del cache.ctx, cache.crop  # close the maps before damaging the files
    damage(cache.dir)
    capsys.readouterr()
    again = data.build_cache(training, tmp_path / "cache")
    notice = [line for line in capsys.readouterr().err.splitlines() if line.startswith("crop cache: ")]
    assert len(notice) == 1 and notice[0].endswith("; rebuilding it"), notice
    assert all(w in notice[0] for w in words), notice[0]
    assert again.dir == cache.dir and len(again) == len(cache)
    np.testing.assert_array_equal(again.ctx[-1], good[0])
    np.testing.assert_array_equal(again.crop[-1], good[1])


@pytest.mark.parametrize("text, words", [
    pytest.param(lambda s: s[: len(s) // 2], ["unreadable"], id="truncated"),
    pytest.param(lambda s: "", ["unreadable"], id="empty"),
    pytest.param(lambda s: "[1, 2]", ["expected a JSON object"], id="not an object"),
    pytest.param(lambda s: json.dumps({**json.loads(s), "val": [10**6]}), ["'val': expected a list of entries"],
                 id="val out of range"),
    pytest.param(lambda s: json.dumps({**json.loads(s), "val": "x"}), ["'val': expected a list of entries"],
                 id="val not a list"),
])
def test_damaged_split_is_remade_with_a_line(tmp_path, capsys, text, words):
    ids = np.repeat(np.arange(30), 2)
    first = data.load_or_make_split(tmp_path, ids, "src", 0.2, seed=3)
    path = tmp_path / "split.json"
    path.write_text(text(path.read_text()))
    capsys.readouterr()
    again = data.load_or_make_split(tmp_path, ids, "src", 0.2, seed=3)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(path) in err[0] and err[0].endswith("making a new split"), err
    assert all(w in err[0] for w in words), err
    np.testing.assert_array_equal(again, first)  # the same seed makes the same split
    assert json.loads(path.read_text())["n"] == len(ids)


# --------------------------------------------------------------------------- submissions


def _sub(tiny_data, tmp_path, edit) -> Path:
    df = pd.read_csv(tiny_data / "solution.csv")
    path = tmp_path / "sub.csv"
    edit(df).to_csv(path, index=False)
    return path


def _swap(df):
    cols = list(df.columns)
    cols[3], cols[4] = cols[4], cols[3]
    return df[cols]


def _empty_id(df):
    df["Id"] = df["Id"].astype(object)
    df.loc[4, "Id"] = ""
    return df


SUBMISSION_CASES = {
    "zero rows, validate": (lambda df: df.iloc[:0], ["validate"], ["rows: expected at least 1", "found 0"]),
    "zero rows, score": (lambda df: df.iloc[:0], ["score"], ["sub.csv: rows: expected at least 1", "found 0"]),
    "duplicate Id": (lambda df: df.assign(Id=[0, 1, 2, 2, *range(4, len(df))]), ["validate"],
                     ["sub.csv: row 3 (line 5): Id:", "found Id 2 again (first at row 2)"]),
    "empty Id": (_empty_id, ["validate"], ["sub.csv: row 4 (line 6): Id: expected an integer, found an empty cell"]),
    "columns in another order": (_swap, ["validate"],
                                 ["sub.csv: header: columns in another order: expected 'Joint 1 x' as column 4",
                                  "found 'Joint 1 y'"]),
    "solution of another length": (lambda df: df.iloc[:4], ["score"],
                                   ["sub.csv: rows: expected as many as the solution", "solution.csv (10), found 4"]),
}


@pytest.mark.parametrize("case", list(SUBMISSION_CASES))
def test_bad_submissions_are_one_line(tiny_data, tmp_path, capsys, monkeypatch, case):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    edit, (cmd,), words = SUBMISSION_CASES[case]
    sub = _sub(tiny_data, tmp_path, edit)
    argv = ["validate", str(sub)] if cmd == "validate" else ["score", str(sub), str(tiny_data / "solution.csv")]
    line = one_error_line(capsys, submit.main(argv))
    assert all(w in line for w in words), line


def test_validate_with_a_bad_testing_file(tiny_data, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    (tmp_path / "BAD_testing.h5").write_bytes(b"not hdf5 at all")
    line = one_error_line(capsys, submit.main(["validate", str(tiny_data / "solution.csv"),
                                               "--test", str(tmp_path / "BAD_testing.h5")]))
    assert "BAD_testing.h5: not a readable HDF5 file" in line
    assert submit.main(["validate", str(tiny_data / "solution.csv"), "--test", str(tiny_data / "testing.h5")]) == 0


# --------------------------------------------------------------------------- Kaggle


def _kaggle_home(monkeypatch, tmp_path, name="kaggle.json", text=None) -> Path:
    for k in ("KAGGLE_API_TOKEN", "KAGGLE_USERNAME", "KAGGLE_KEY", cli.DEBUG_ENV):
        monkeypatch.delenv(k, raising=False)
    kg = tmp_path / "kg"
    kg.mkdir(exist_ok=True)
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(kg))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "home" / ".config"))
    if text is not None:
        (kg / name).write_text(text)
    return kg / name


@pytest.mark.parametrize("name, text, words", [
    ("kaggle.json", '{"username": "me", "ke', ["kaggle.json: expected JSON", "found invalid JSON", "line 1"]),
    ("kaggle.json", '{"username": "me"}', ['non-empty "username" and "key"', "found keys ['username']"]),
    ("kaggle.json", '{"username": "me", "key": ""}', ['non-empty "username" and "key"']),
    ("kaggle.json", '["me", "secret"]', ["found a JSON list"]),
    ("access_token", "  \n", ["access_token: expected an API token, found an empty file"]),
])
def test_malformed_credentials_are_one_line_before_the_cli(monkeypatch, tmp_path, capsys, name, text, words):
    path = _kaggle_home(monkeypatch, tmp_path, name, text)
    monkeypatch.setattr(submit.subprocess, "run", lambda *a, **k: pytest.fail("the kaggle CLI was started"))
    line = one_error_line(capsys, submit.main(["download", "--out", str(tmp_path / "dl")]))
    assert str(path) in line and all(w in line for w in words), line
    assert "secret" not in line


def _fake_kaggle(monkeypatch, tmp_path, script: str) -> None:
    fake = tmp_path / "bin" / "kaggle"
    fake.parent.mkdir(exist_ok=True)
    fake.write_text("#!/bin/sh\n" + script)
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:{os.environ['PATH']}")


def test_failing_kaggle_cli_is_one_trimmed_line(monkeypatch, tmp_path, capsys):
    _kaggle_home(monkeypatch, tmp_path, "kaggle.json", '{"username": "me", "key": "k"}')
    lines = ["Warning: Your Kaggle API key is readable by other users",
             "Authentication required to call the Kaggle API.", "", "First, you will need a Kaggle account. You can sign up at"] + [f"  help line {i}" for i in range(12)]
    _fake_kaggle(monkeypatch, tmp_path, "".join(f"echo '{s}'\n" for s in lines) + "exit 1\n")
    line = one_error_line(capsys, submit.main(["download", "--out", str(tmp_path / "dl")]))
    assert line.endswith("failed (exit 1): Authentication required to call the Kaggle API."), line
    assert "help line" not in capsys.readouterr().out


def _download_with(monkeypatch, tmp_path, script: str, stall_s: float) -> int:
    """`lib.submit download` into tmp_path/dl with a fake kaggle CLI running `script` (its $5: the folder)
    and a stall limit of stall_s seconds; the exit code."""
    _kaggle_home(monkeypatch, tmp_path, "kaggle.json", '{"username": "me", "key": "k"}')
    _fake_kaggle(monkeypatch, tmp_path, script)
    monkeypatch.setitem(submit.KAGGLE_TIMEOUT_S, "download", stall_s)
    return submit.main(["download", "--out", str(tmp_path / "dl")])


def test_a_stalled_kaggle_download_is_one_line(monkeypatch, tmp_path, capsys):
    """No output and no byte written for the download's timeout: stopped, in one line, soon."""
    t = time.monotonic()
    line = one_error_line(capsys, _download_with(monkeypatch, tmp_path, "exec sleep 30\n", 0.5))
    assert "kaggle competitions download" in line and "no progress for 0.5 s" in line, line
    assert time.monotonic() - t < 10


def test_a_slow_kaggle_download_runs_past_the_timeout_while_bytes_arrive(monkeypatch, tmp_path, capsys):
    """A download longer than its timeout goes on while its file grows (the CLI silent), with a progress bar."""
    # kaggle competitions download NAME -p OUT: $5 is the folder; 12 chunks 0.25 s apart, 3 s in all
    assert _download_with(monkeypatch, tmp_path, "for i in 1 2 3 4 5 6 7 8 9 10 11 12; do head -c 100000 /dev/zero "
                          ">> \"$5/training.h5\"; sleep 0.25; done; : > \"$5/testing.h5\"\n", 1.0) == 0
    assert (tmp_path / "dl" / "training.h5").stat().st_size == 1_200_000
    err = capsys.readouterr().err
    assert "download into" in err and re.search(r"\d[kM]B", err), err


def test_a_kaggle_download_that_only_talks_is_not_stalled(monkeypatch, tmp_path, capsys):
    """The CLI's output counts as progress too (its retries print before any byte arrives)."""
    assert _download_with(monkeypatch, tmp_path, "for i in 1 2 3 4 5 6 7 8 9 10; do echo \"Retrying in $i s\"; "
                          "sleep 0.25; done; : > \"$5/training.h5\"; : > \"$5/testing.h5\"\n", 1.0) == 0
    assert "Retrying in 10 s" in capsys.readouterr().out  # nothing arrived: the CLI's last line is shown


def test_kaggle_download_unpacks_only_the_competitions_archive(monkeypatch, tmp_path, capsys):
    """Other zips in the folder (RHD's own download) are left alone; files missing after it: one line."""
    _kaggle_home(monkeypatch, tmp_path, "kaggle.json", '{"username": "me", "key": "k"}')
    _fake_kaggle(monkeypatch, tmp_path, "exit 0\n")  # as if the archive had just arrived
    out = tmp_path / "dl"
    out.mkdir()
    with zipfile.ZipFile(out / f"{submit.COMPETITION}.zip", "w") as z:
        z.writestr("training.h5", b"t")
        z.writestr("testing.h5", b"e")
    with zipfile.ZipFile(out / "RHD_v1-1.zip", "w") as z:
        z.writestr("RHD_published_v2/README.txt", b"x")
    assert submit.main(["download", "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["RHD_v1-1.zip", "testing.h5", "training.h5"]
    (out / "testing.h5").unlink()
    line = one_error_line(capsys, submit.main(["download", "--out", str(out)]))
    assert f"{out}: expected testing.h5 after the download, found ['RHD_v1-1.zip', 'training.h5']" in line, line


def test_kaggle_refuses_a_submission_for_another_test_set(tmp_path, capsys):
    """Kaggle scores only the competition's 3,611 test crops: a synthetic set's submission is refused
    in one line before anything is sent (also as a dry run); --rows names another count."""
    submit.write_submission(tmp_path / "synthetic.csv", np.ones((386, 21, 2)))
    line = one_error_line(capsys, submit.main(["kaggle", str(tmp_path / "synthetic.csv"), "-m", "x", "--dry-run"]))
    assert "expected the competition's 3,611 test crops, found 386 rows (predictions for the synthetic set?" in line
    assert submit.main(["kaggle", str(tmp_path / "synthetic.csv"), "-m", "x", "--dry-run", "--rows", "386"]) == 0


# --------------------------------------------------------------------------- benchmarks and the renderer


def _bench(argv):
    from benchmarks.__main__ import main
    return main(argv)


def _realism(argv):
    from benchmarks.realism import main
    return main(argv)


def _synth_speed(argv):
    from benchmarks.synth_speed import main
    return main(argv)


def _synth(argv):
    from lib.synth.__main__ import main
    return main(argv)


def _pipeline(argv):
    from lib.pipeline import main
    return main(argv)


def _ensemble(argv):
    from lib.ensemble import main
    return main(argv)


OPTION_CASES = {
    "ensemble: a name with a folder": (_ensemble, ["--name", "../elsewhere"],
                                       ["--name: expected a file name for submissions/<name>.csv (no folders), "
                                        "found '../elsewhere'"]),
    "pipeline: nothing left to run": (_pipeline, ["--profile", "smoke", "--only", "01_eda", "--skip", "01_eda"],
                                      ["--only/--skip: expected at least one step left to run, found none"]),
    "unknown model": (_bench, ["models", "--models", "nope"], ["--models: expected", "cpm", "found 'nope'"]),
    "missing data dir": (_bench, ["input", "--data-dir", "{tmp}/no_data", "--n", "4"],
                         ["no_data/training.h5", "not found"]),
    "workers not numbers": (_bench, ["input", "--workers", "a,b"], ["--workers: expected comma-separated integers >= 0",
                                                                    "found 'a,b'"]),
    "negative workers": (_bench, ["input", "--workers", "0,-2"], ["--workers", "found '0,-2'"]),
    "unknown pipeline": (_bench, ["input", "--pipelines", "none,fancy"], ["--pipelines", "found 'fancy'"]),
    "procs not numbers": (_bench, ["scaling", "--procs", "x"], ["--procs", "found 'x'"]),
    "zero batch": (_bench, ["models", "--batch", "0"], ["--batch: expected a positive integer, found 0"]),
    "--out is a directory": (_bench, ["accuracy", "--out", "{tmp}"], ["--out {tmp}: expected a markdown file",
                                                                      "found a directory"]),
    "targets: --loop is a directory": (_bench, ["targets", "--loop", "{tmp}"],
                                       ["--loop {tmp}: expected a CSV file of `loop --csv`, found a directory"]),
    "targets: no such run": (_bench, ["targets", "--run", "{tmp}/nope"],
                             ["--run {tmp}/nope: expected a run directory, found nothing there"]),
    "targets: bad seconds": (_bench, ["targets", "--seconds", "all=ten"],
                             ["--seconds: expected NAME=SECONDS with NAME among ['all', 'profile']", "found 'all=ten'"]),
    "loop --csv is a directory": (_bench, ["loop", "--csv", "{tmp}"], ["--csv {tmp}: expected a CSV file",
                                                                      "found a directory"]),
    "bad leaderboard spec": (_bench, ["leaderboard", "--runs", "nope:modern"], ["run spec 'nope:modern'",
                                                                               "unknown model 'nope'"]),
    "realism --out is a directory": (_realism, ["--images", "1", "--out", "{tmp}"], ["--out {tmp}", "directory"]),
    "synth_speed zero images": (_synth_speed, ["--images", "0"], ["--images: expected an integer >= 1, found 0"]),
    "synth_speed zero workers": (_synth_speed, ["--workers", "0"], ["--workers: expected an integer >= 1"]),
    "synth into /proc": (_synth, ["--out", "/proc/handjoints_x", "--split", "training", "--images", "2"],
                         ["/proc/handjoints_x/training", "expected a directory where files can be created"]),
    "synth sheet onto a directory": (_synth, ["sheet", "{tmp}", "--no-real"],
                                     ["{tmp}: expected the path of an image file to write, found a directory"]),
}


@pytest.mark.parametrize("case", list(OPTION_CASES))
def test_bad_options_are_one_line(tmp_path, capsys, monkeypatch, case):
    monkeypatch.delenv(cli.DEBUG_ENV, raising=False)
    fn, argv, words = OPTION_CASES[case]
    if "/proc/" in " ".join(argv) and not Path("/proc/self").exists():
        pytest.skip("no /proc here")
    line = one_error_line(capsys, fn([a.replace("{tmp}", str(tmp_path)) for a in argv]))
    assert all(w.replace("{tmp}", str(tmp_path)) in line for w in words), line


def test_pipeline_only_without_names_is_refused(capsys):
    """`--only` with no step after it used to run every step (a full render and all notebooks)."""
    from lib.pipeline import main

    with pytest.raises(SystemExit) as e:
        main(["--only"])
    assert e.value.code == 2 and "--only: expected at least one argument" in capsys.readouterr().err


def test_render_with_workers_from_a_stdin_script_returns(tmp_path):
    """A script piped to `python -` has no file for forkserver/spawn workers to re-import: no hang."""
    script = ("from lib.synth import render_dataset\n"
              f"print(render_dataset({str(tmp_path)!r}, 'training', 3, seed=0, workers=2))\n")
    r = subprocess.run([sys.executable, "-"], input=script, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "cannot re-import the main script '<stdin>'" in r.stderr and "rendering with 1 process" in r.stderr
    split = tmp_path / "training"
    assert sorted(p.name for p in (split / "color").iterdir()) == ["00000.png", "00001.png", "00002.png"]
    assert (split / "anno_training.pickle").exists()


def test_workers_dying_at_start_up_fall_back_to_one_process(tmp_path):
    """Without the check above, forkserver workers die re-importing '<stdin>': the pool breaks (no
    endless respawning) and the images left are rendered by the calling process."""
    script = ("from lib.synth import dataset\n"
              "dataset._why_no_workers = lambda: None\n"
              f"print(dataset.render_dataset({str(tmp_path)!r}, 'training', 3, seed=0, workers=2))\n")
    r = subprocess.run([sys.executable, "-"], input=script, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "training: a worker process died" in r.stderr and "images left with 1 process" in r.stderr
    assert len(list((tmp_path / "training" / "color").iterdir())) == 3


# --------------------------------------------------------------------------- environment


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_lab_allows_root_only_as_root():
    text = (REPO / "Makefile").read_text()
    assert "$(if $(filter 0,$(shell id -u)),--allow-root)" in text
    r = subprocess.run(["make", "-n", "lab"], cwd=REPO, capture_output=True, text=True, timeout=60)
    lab = [line for line in r.stdout.splitlines() if "jupyter lab" in line]
    assert len(lab) == 1, r.stdout + r.stderr
    assert ("--allow-root" in lab[0]) == (os.geteuid() == 0)


def test_importing_lib_asks_no_network_for_albumentations_updates():
    code = ("import os, sys\n"
            "events = []\n"
            "sys.addaudithook(lambda e, a: events.append(e) if e in ('urllib.Request', 'socket.connect', "
            "'socket.getaddrinfo') else None)\n"
            "import lib.augment\n"
            "assert os.environ.get('NO_ALBUMENTATIONS_UPDATE') == '1', os.environ.get('NO_ALBUMENTATIONS_UPDATE')\n"
            "assert not events, events\n"
            "print('quiet')\n")
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    r = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "quiet", r.stderr[-2000:]


def _disk(free: int):
    """shutil.disk_usage as a disk with `free` bytes left."""
    return lambda path: shutil._ntuple_diskusage(1 << 40, (1 << 40) - free, free)


def test_a_full_disk_while_saving_a_checkpoint_is_one_line_and_keeps_the_last_one(tmp_path, monkeypatch):
    """torch.save on a full disk says only "unexpected pos N vs M" (CI saw it): the write is refused in
    one line naming the file, the previous last.pt stays, and no temporary file is left."""
    import errno

    import torch

    from lib.runs import Run

    run = Run(tmp_path / "run")
    run.save_checkpoint("last", {"w": torch.ones(3)})
    before = run.checkpoint_path("last").read_bytes()

    def save_on_a_full_disk(obj, f):  # what torch.save does there: part of the file, then its error
        f.write(bytes(4096))
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 61262336 vs 61262232")

    monkeypatch.setattr(torch, "save", save_on_a_full_disk)
    monkeypatch.setattr(shutil, "disk_usage", _disk(free=4096))
    with pytest.raises(OSError) as e:
        run.save_checkpoint("last", {"w": torch.zeros(3)})
    line = cli.format_error(e.value)
    assert e.value.errno == errno.ENOSPC and "\n" not in line
    assert line.startswith(f"{run.checkpoint_path('last')}: the disk ran out of space after 0.0 MB (0.0 MB free)"), line
    assert "the previous file, if any, is unchanged" in line and "free some space" in line
    assert run.checkpoint_path("last").read_bytes() == before
    assert sorted(p.name for p in run.dir.iterdir()) == ["last.pt"]

    # the file system's own ENOSPC is a full disk whatever the free space (a quota), and the same error
    # with space left is not one: it keeps its own message
    def enospc(obj, f):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", enospc)
    monkeypatch.setattr(shutil, "disk_usage", _disk(free=50 << 30))
    with pytest.raises(OSError, match="ran out of space .*51,200 MB free"):
        run.save_checkpoint("last", {})
    monkeypatch.setattr(torch, "save", save_on_a_full_disk)
    with pytest.raises(RuntimeError, match="unexpected pos"):
        run.save_checkpoint("last", {})
    assert run.checkpoint_path("last").read_bytes() == before
    assert sorted(p.name for p in run.dir.iterdir()) == ["last.pt"]


def test_a_crop_cache_that_does_not_fit_on_the_disk_is_refused_before_it_starts(tiny_data, tmp_path, monkeypatch,
                                                                                  capsys):
    """The cache is written through memory maps, which die of SIGBUS when the disk fills: refused up front."""
    d = tmp_path / "d"
    shutil.copytree(tiny_data, d, ignore=shutil.ignore_patterns("cache", "split.json"))
    monkeypatch.setattr(shutil, "disk_usage", _disk(free=20 << 20))
    line = one_error_line(capsys, data.main(["cache", str(d)]))
    assert line.startswith(f"error: {d / 'cache'}: needs ") and "32 MB to spare, and its disk has 20 MB free" in line
    assert not (d / "cache").exists() or not any((d / "cache").iterdir())
    monkeypatch.setattr(shutil, "disk_usage", _disk(free=1 << 30))
    assert data.main(["cache", str(d)]) == 0


@pytest.fixture
def small_disk(tmp_path):
    """A real 4 MB file system (tmpfs; skipped where this user may not mount one)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {done.stderr.strip()}")
    try:
        yield mnt
    finally:
        done = subprocess.run(["umount", str(mnt)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr


def test_a_real_full_disk_while_saving_a_checkpoint(small_disk):
    """torch.save into a 4 MB file system: one line, the last checkpoint kept, the space given back."""
    import torch

    from lib.runs import Run

    run = Run(small_disk / "run")
    run.save_checkpoint("last", {"w": torch.ones(100_000)})  # 0.4 MB
    before = run.checkpoint_path("last").read_bytes()
    with pytest.raises(OSError, match=r"last\.pt: the disk ran out of space after 3\.\d MB \(0\.0 MB free\)"):
        run.save_checkpoint("last", {"w": torch.ones(2_000_000)})  # 8 MB
    assert shutil.disk_usage(small_disk).free > 3 << 20  # the failed write's space is given back at once
    assert run.checkpoint_path("last").read_bytes() == before
    assert sorted(p.name for p in run.dir.iterdir()) == ["last.pt"]
