"""The benchmark's own rules that the figures depend on."""
from bench.tools import tool_env


def test_mirror_is_timed_from_compiled_bytecode_whatever_the_shell_says(monkeypatch):
    monkeypatch.setenv("PYTHONDONTWRITEBYTECODE", "1")
    assert "PYTHONDONTWRITEBYTECODE" not in tool_env()


def test_every_case_name_is_registered(tmp_path):
    from bench.cases import CASE_NAMES, Context, build_cases
    from bench.runner import Trash

    registry = build_cases(Context(tmp_path, Trash(tmp_path / "trash"), True, 2, "copy"))
    assert set(registry) == set(CASE_NAMES)


def test_bigdir_delete_runs_start_from_a_full_copy_and_src_lacks_half(tmp_path, monkeypatch):
    """Every tool and round syncs a fresh full copy against SRC, the tree minus a fixed half
    whose kept files have the cached tree's bytes, modes and mtimes (else sync would copy)."""
    from bench import cases, trees
    from bench.runner import CaseResult, Trash

    class Unmounted:                       # the plain-folder fallback: no loop mount in a test
        def __init__(self, *args):
            self.mounted, self.problem = False, "test"

        def close(self):
            pass

    monkeypatch.setattr(cases, "LoopFs", Unmounted)
    ctx = cases.Context(tmp_path, Trash(tmp_path / "trash"), True, 1, "copy", warmup=False)
    case = cases.build_cases(ctx)["bigdir-delete"][0]
    case.setup(case.tools)
    spec = case.spec
    full = trees.tree_summary(case.cached)
    assert full[0] == spec.files and trees.tree_summary(case.src)[0] == spec.files // 2
    kept = [rel for _index, rel in trees.iter_relpaths(spec) if (case.src / rel).exists()]
    assert trees.same_files(case.cached, case.src, kept)
    assert (case.src / "d0000").stat().st_mtime_ns == (case.cached / "d0000").stat().st_mtime_ns
    for rnd in (1, 2):
        for tool in case.tools:
            src, dst = case.prepare(tool, rnd)
            assert src == case.src and trees.tree_summary(dst) == full
            (dst / kept[0]).unlink()           # what a run would do; the next starts full again
            case.after(tool, rnd, dst)
    case.teardown(CaseResult(case.name, case.description, case.metric, 2))
    assert not case.src.exists() and not list(case.dst_root.iterdir())     # all in the trash
