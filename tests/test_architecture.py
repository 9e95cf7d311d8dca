"""The rooms of lib/ (README "Architecture"): a one-way import graph, no private names across
modules, and a run's file names spelled only in lib/runs.py."""
import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# lower layers first; a module may import only from modules before it (README, Architecture)
LAYERS = ["cli", "paths", "io", "joints", "data", "reference", "runs", "metrics", "viz", "synth", "augment", "samplers", "codecs",
          "models", "config", "train", "submit", "predict", "ensemble", "export", "eda", "pipeline"]
RUN_FILES = {"config.json", "log.csv", "last.pt", "best.pt", "val_index.npy", "val_pred.npy", "test_pred.npy",
             "val_metrics.json", "per_joint.csv", "submission.csv", "curves.png", "worst.png", "curve.csv"}


def _module(path: Path) -> str:
    """lib/x.py -> x; lib/models/anything.py -> models (a package is one room)."""
    return path.relative_to(REPO / "lib").parts[0].removesuffix(".py")


def _lib_imports(tree: ast.AST) -> list[tuple[str, list[str]]]:
    """(imported lib module, imported names) for every absolute import of lib, lazy ones included."""
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").startswith("lib"):
            parts = node.module.split(".")
            if len(parts) == 1:  # from lib import a, b
                out += [(a.name, []) for a in node.names]
            else:
                out.append((parts[1], [a.name for a in node.names]))
        elif isinstance(node, ast.Import):
            out += [(a.name.split(".")[1], []) for a in node.names if a.name.startswith("lib.")]
    return out


def _sources():
    for path in sorted((REPO / "lib").rglob("*.py")):
        if path.name != "__init__.py" or path.parent != REPO / "lib":
            yield path, ast.parse(path.read_text())


def test_every_module_has_a_layer():
    found = {_module(p) for p, _ in _sources()}
    assert found == set(LAYERS), f"place new modules in LAYERS (and the README table): {found ^ set(LAYERS)}"


def test_imports_point_down_and_take_no_private_names():
    wrong = []
    for path, tree in _sources():
        me = _module(path)
        for target, names in _lib_imports(tree):
            if target != me and LAYERS.index(target) > LAYERS.index(me):
                wrong.append(f"{path.relative_to(REPO)} imports lib.{target} (a higher layer)")
            private = [n for n in names if n.startswith("_")]
            if target != me and private:
                wrong.append(f"{path.relative_to(REPO)} imports private {private} from lib.{target}")
    assert not wrong, "\n".join(wrong)


def test_run_files_are_named_only_in_runs():
    """Every other module reaches a run's files through lib.runs.Run (docstrings may mention them)."""
    wrong = []
    for path in sorted([*(REPO / "lib").rglob("*.py"), *(REPO / "benchmarks").rglob("*.py")]):
        if path == REPO / "lib" / "runs.py":
            continue
        tree = ast.parse(path.read_text())
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.ClassDef, ast.FunctionDef)) and n.body
                      and isinstance(n.body[0], ast.Expr) and isinstance(n.body[0].value, ast.Constant)}
        for node in ast.walk(tree):
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings:
                hits = [f for f in RUN_FILES if f in node.value]
                if hits:
                    wrong.append(f"{path.relative_to(REPO)}:{node.lineno} spells {hits}")
    assert not wrong, "\n".join(wrong)


def test_every_test_has_a_time_limit(request):
    """pytest-timeout is active (pytest.ini `timeout`), so a deadlock fails one test instead of hanging CI."""
    assert request.config.pluginmanager.hasplugin("timeout")
    assert 0 < float(request.config.getini("timeout")) <= 600


GPU_BOX = '''
import torch
torch.cuda.is_available = lambda: True  # a GPU box, simulated
'''
SUITE = '''
import os, subprocess, sys
import pytest
from lib.config import resolve_device

CHILD = "import os, torch; print(repr(os.environ.get('CUDA_VISIBLE_DEVICES')), torch.cuda.is_available())"

def test_a_cpu_test():
    assert resolve_device("auto") == "cpu"
    child = subprocess.run([sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=120)
    assert child.stdout.split() == ["''", "False"], child

@pytest.mark.gpu
def test_a_gpu_test():
    assert resolve_device("auto") == "cuda"
'''


def test_only_tests_marked_gpu_see_a_gpu(pytester, monkeypatch):
    """On a GPU box `make test` runs the CPU suite as CI does ("auto" resolves to the CPU, in the
    test's process and in its children) and the tests marked gpu on the GPU; without a GPU those skip."""
    monkeypatch.setenv("PYTHONPATH", str(REPO))
    hooks = "from tests.conftest import pytest_collection_modifyitems, _no_gpu_unless_marked\n"
    pytester.makeini("[pytest]\nmarkers =\n    gpu: needs a CUDA GPU\n")
    pytester.makepyfile(test_suite=SUITE)
    for conftest, outcome in ((GPU_BOX + hooks, dict(passed=2)), (hooks, dict(passed=1, skipped=1))):
        pytester.makeconftest(conftest)
        pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers").assert_outcomes(**outcome)


def test_a_suite_without_the_disk_for_its_files_stops_in_one_line(pytester, monkeypatch):
    """A whole tier on a disk too full for its temporary files stops before its first test, in one line
    naming the folder, the need and the free space; with the space it runs, and a few tests always run."""
    import shutil

    import pytest

    from tests import conftest

    pytester.makeini("[pytest]\nmarkers =\n    slow: slow\n")
    pytester.makeconftest("from tests.conftest import pytest_collection_finish\n")
    pytester.makepyfile(test_many='''
import pytest

@pytest.mark.parametrize("i", range(60))
def test_quick(i):
    pass

@pytest.mark.slow
def test_slow():
    pass
''')
    basetemp = pytester.path / "tmp"

    def free(gb: float) -> None:
        n = int(gb * 2**30)
        monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(1 << 40, (1 << 40) - n, n))

    free(conftest.DISK_NEED_GB["quick"] + 0.1)  # enough for the quick tier, not for the slow one
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", f"--basetemp={basetemp}")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stdout.fnmatch_lines([f"*{basetemp}: these 61 tests need 2.5 GB free for their temporary files and its "
                                 f"disk has 1.1 GB; free some space, or give a folder on a larger disk with --basetemp*"])
    assert "passed" not in result.stdout.str()
    pytester.runpytest_inprocess("-p", "no:cacheprovider", f"--basetemp={basetemp}", "-m", "not slow"
                                 ).assert_outcomes(passed=60)
    free(0.1)
    pytester.runpytest_inprocess("-p", "no:cacheprovider", f"--basetemp={basetemp}", "-k", "test_quick and 1"
                                 ).assert_outcomes(passed=15)


def test_a_passing_tests_files_are_gone_before_the_next_test(pytester):
    """The suite writes gigabytes of checkpoints over a session (CI once ran out of disk): with the
    repo's pytest.ini a passing test's tmp_path is deleted when it ends, a failing test's is kept."""
    pytester.makeini((REPO / "pytest.ini").read_text())
    pytester.makepyfile(test_disk='''
def test_a_passes(tmp_path):
    (tmp_path / "ckpt.pt").write_bytes(bytes(1000))

def test_b_fails(tmp_path):
    (tmp_path / "ckpt.pt").write_bytes(bytes(1000))
    assert False

def test_c_sees_what_is_left(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    assert sorted(p.name for p in base.iterdir() if p.is_dir() and not p.is_symlink()) == ["test_b_fails0"]
''')
    pytester.runpytest_inprocess("-p", "no:cacheprovider").assert_outcomes(passed=2, failed=1)
