"""Splitting the heavy commands: torchrun on 2 CPU ranks (gloo) and SLURM-array shards with `gumalign merge` write
what one process writes; a killed rank resumes with --continue; train under torchrun runs, resumes and makes the
one-process model. The ranks run one CPU thread each (OMP_NUM_THREADS=1), as the one-process runs here (--threads 1).
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from gumalign.cli.main import app
from gumalign.distributed import SINGLE, Shard, World, parse_shard, shard_rows
from gumalign.errors import GumalignError

runner = CliRunner()


def gumalign(*args):
    result = runner.invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def torchrun(*args, check=True, popen=False):
    """`torchrun --standalone --nproc-per-node 2 gumalign ARGS` on the CPU."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "gumalign.cli.main", *[str(a) for a in args]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if popen:
        return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert done.returncode == 0, done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def sim(tmp_path_factory):
    folder = tmp_path_factory.mktemp("distributed")
    gumalign("simulate", "--structure", "builtin:proteasome", "--n", 16, "--snr", 100, "--box", 32,
             "--out", folder / "sim", "--quiet")
    return folder


def align_args(sim, out, method, batch):
    return ["align", "--ref", sim / "sim" / "reference.mrc", "--particles", sim / "sim" / "particles.star",
            "--out", out, "--method", method, "--batch-size", batch, "--device", "cpu", "--threads", 1]


# -- the sharding rule ---------------------------------------------------------------------------------------------

@pytest.mark.parametrize("n, count, block", [(16, 2, 8), (16, 2, 1), (17, 3, 4), (5, 4, 2), (3, 8, 1), (100, 7, 32)])
def test_shards_cover_every_row_once_in_order_on_block_boundaries(n, count, block):
    parts = [shard_rows(n, i, count, block) for i in range(count)]
    assert np.array_equal(np.concatenate(parts), np.arange(n))
    assert all(len(p) == 0 or p[0] % block == 0 for p in parts)
    sizes = [-(-len(p) // block) for p in parts]  # blocks per shard differ by at most one
    assert max(sizes) - min(sizes) <= 1
    assert np.array_equal(World(1, count).rows(n, block), parts[1]) and np.array_equal(Shard(1, count).rows(n, block), parts[1])


def test_shard_option_is_one_based_and_checked():
    assert parse_shard("2/8") == Shard(1, 8) and parse_shard(" 8 / 8 ").label == "8of8"
    for bad in ["0/4", "5/4", "1/0", "a/b", "3"]:
        with pytest.raises(GumalignError, match="--shard"):
            parse_shard(bad)


def test_a_world_of_one_process_needs_no_process_group():
    values = np.arange(6.0).reshape(2, 3)
    assert SINGLE.gather_rows(values, [2]) is not None and np.array_equal(SINGLE.gather_rows(values, [2]), values)
    assert SINGLE.sum_numbers(2.5) == [2.5] and SINGLE.any(True) and not SINGLE.any(False)


def test_training_refuses_a_batch_that_leaves_a_rank_without_pairs():
    from gumalign.train.loop import check_batches_for_ranks

    check_batches_for_ranks(14, 4, World(0, 2))  # 4, 4, 4, 2: every rank has a pair in every batch
    with pytest.raises(GumalignError, match="batch of 1"):
        check_batches_for_ranks(13, 4, World(0, 2))
    with pytest.raises(GumalignError, match="at least 3"):
        check_batches_for_ranks(12, 2, World(0, 3))


# -- align -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["fa", "gumnet"])
def test_align_on_two_ranks_and_in_two_shards_writes_the_one_process_star(sim, method):
    """Angles and shifts to the last written digit: the STAR files are byte-identical."""
    one, two, merged = (sim / f"{method}_{name}.star" for name in ("one", "two", "merged"))
    gumalign(*align_args(sim, one, method, 8), "--quiet")
    done = torchrun(*align_args(sim, two, method, 8))
    assert "rank 0/2: 8 particles" in done.stderr and "rank 1/2: 8 particles" in done.stderr
    assert len([line for line in done.stdout.splitlines() if line.startswith("particles=16 ")]) == 1, done.stdout
    assert two.read_bytes() == one.read_bytes()
    assert not list(sim.glob(f"{two.name}.*")), "partial files left behind"

    for i in (1, 2):
        gumalign(*align_args(sim, merged, method, 8), "--shard", f"{i}/2", "--quiet")
    assert not merged.exists() and sorted(p.name for p in sim.glob(f"{merged.name}.*")) == [
        f"{merged.name}.shard1of2", f"{merged.name}.shard2of2"]
    result = gumalign("merge", "--out", merged)
    assert "particles=16" in result.output
    assert merged.read_bytes() == one.read_bytes()


def test_merge_names_a_missing_or_unfinished_shard_and_a_rerun_of_it_alone_completes(sim):
    out = sim / "lone.star"
    gumalign(*align_args(sim, out, "fa", 4), "--shard", "2/2", "--quiet")
    result = runner.invoke(app, ["merge", str(sim / "lone.star.shard2of2")])
    assert result.exit_code == 2 and "1/2 missing" in result.output
    gumalign(*align_args(sim, out, "fa", 4), "--shard", "1/2", "--quiet")
    shard = sim / "lone.star.shard1of2"
    kept = shard.read_text()
    shard.write_text("".join(kept.splitlines(keepends=True)[:-2]))  # a shard cut short
    result = runner.invoke(app, ["merge", "--out", str(out)])
    assert result.exit_code == 2 and "rerun shard 1/2 with --continue" in result.output
    gumalign(*align_args(sim, out, "fa", 4), "--shard", "1/2", "--continue", "--quiet")
    assert shard.read_text() == kept  # the batch redone whole gives the same lines
    gumalign("merge", "--out", out)
    reference = sim / "lone_one.star"
    gumalign(*align_args(sim, reference, "fa", 4), "--quiet")
    assert out.read_bytes() == reference.read_bytes()


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of torchrun worker ``rank`` among the children of ``parent``."""
    for task in Path(f"/proc/{parent}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                environ = Path(f"/proc/{child}/environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if f"RANK={rank}".encode() in environ:
                return int(child)
    return None


def test_a_rank_killed_mid_run_finishes_with_continue_and_the_same_result(sim):
    one, out = sim / "killed_one.star", sim / "killed.star"
    args = align_args(sim, out, "gumnet", 1)
    running = torchrun(*args, popen=True)
    partial = sim / "killed.star.shard2of2.partial"
    try:
        deadline = time.monotonic() + 120
        while not (partial.exists() and len(partial.read_text().splitlines()) >= 3):  # key + 2 particles
            assert running.poll() is None and time.monotonic() < deadline, "rank 1 wrote no results"
            time.sleep(0.02)
        pid = _rank_pid(running.pid, 1)
        assert pid is not None
        os.kill(pid, signal.SIGKILL)
        at_kill = len(partial.read_text().splitlines()) - 1
        running.communicate(timeout=120)
    finally:
        if running.poll() is None:
            running.kill()
    assert running.returncode != 0 and not out.exists()
    assert 2 <= at_kill < 8, f"rank 1 had done {at_kill} of its 8 particles when killed"
    done = torchrun(*args, "--continue")
    assert "rank 1/2: 8 particles" in done.stderr
    gumalign(*align_args(sim, one, "gumnet", 1), "--quiet")
    assert out.read_bytes() == one.read_bytes()
    assert not partial.exists()


# -- average -----------------------------------------------------------------------------------------------------

def _maps(out: Path) -> dict:
    from gumalign.io.mrc import read_volume

    return {s: read_volume(out.with_name(out.stem + s + ".mrc")).data for s in ("", "_half1", "_half2")}


def _assert_same_maps(a: Path, b: Path, rtol=1e-5):
    for suffix, (x, y) in zip(("full", "half1", "half2"), zip(_maps(a).values(), _maps(b).values())):
        assert np.abs(x - y).max() <= rtol * np.abs(x).max(), suffix


def test_average_on_two_ranks_and_from_shard_sums_equals_one_process(sim):
    star = sim / "sim" / "particles.star"
    common = ["--particles", star, "--batch-size", 4, "--device", "cpu", "--threads", 1]
    one, two, merged = sim / "avg_one.mrc", sim / "avg_two.mrc", sim / "avg_merged.mrc"
    gumalign("average", *common, "--out", one, "--quiet")
    done = torchrun("average", *common, "--out", two)
    assert "rank 0/2: 8 particles" in done.stderr and "rank 1/2: 8 particles" in done.stderr
    _assert_same_maps(one, two)
    for i in (1, 2):
        gumalign("average", *common, "--out", merged, "--shard", f"{i}/2", "--quiet")
    assert not merged.exists()
    gumalign("merge", sim / "avg_merged_shard1of2.npz", sim / "avg_merged_shard2of2.npz")
    _assert_same_maps(one, merged)
    result = runner.invoke(app, ["average", *map(str, common), "--out", str(merged), "--shard", "1/2",
                                 "--iterations", "1"])
    assert result.exit_code == 2 and "--iterations" in result.output


def test_shards_with_sym_merge_into_the_single_runs_symmetrised_maps(sim):
    """average --sym D7 --shard I/N: each shard keeps its plain sums and the group; merge symmetrises the total as
    the single run does before its division (the simulated proteasome is D7 in RELION's frame)."""
    star = sim / "sim" / "particles.star"
    common = ["--particles", star, "--batch-size", 4, "--device", "cpu", "--threads", 1]
    one, merged, plain = sim / "sym_one.mrc", sim / "sym_merged.mrc", sim / "sym_plain.mrc"
    done = gumalign("average", *common, "--sym", "D7", "--out", one, "--quiet")
    assert "particles=16 half1=8 half2=8" in done.stdout  # particles, not their 14 symmetry copies each
    for i in (1, 2):
        gumalign("average", *common, "--sym", "D7", "--out", merged, "--shard", f"{i}/2", "--quiet")
    gumalign("merge", sim / "sym_merged_shard1of2.npz", sim / "sym_merged_shard2of2.npz")
    _assert_same_maps(one, merged)
    gumalign("average", *common, "--out", plain, "--quiet")
    full_sym, full_plain = _maps(one)[""], _maps(plain)[""]
    assert np.abs(full_sym - full_plain).max() > 0.01 * np.abs(full_plain).max()  # the group did something
    # Shards of one run cannot disagree on the group: merge names the difference.
    gumalign("average", *common, "--out", sim / "mixed.mrc", "--shard", "1/2", "--quiet")
    gumalign("average", *common, "--sym", "D7", "--out", sim / "mixed.mrc", "--shard", "2/2", "--quiet")
    result = runner.invoke(app, ["merge", str(sim / "mixed_shard1of2.npz"), str(sim / "mixed_shard2of2.npz")])
    assert result.exit_code == 2 and "symmetry" in result.output


def test_iterative_average_on_two_ranks_equals_one_process(sim):
    star = sim / "sim" / "particles.star"
    common = ["--particles", star, "--iterations", 1, "--method", "fa", "--batch-size", 4, "--device", "cpu",
              "--threads", 1]
    one, two = sim / "it_one.mrc", sim / "it_two.mrc"
    gumalign("average", *common, "--out", one, "--quiet")
    torchrun("average", *common, "--out", two)
    _assert_same_maps(one, two)
    assert two.with_suffix(".star").read_bytes() == one.with_suffix(".star").read_bytes()


def test_pairwise_cluster_on_two_ranks_splits_the_pairs_and_writes_the_one_process_outputs(sim):
    from gumalign.io.star import read_star, write_star

    star = sim / "sim" / "nine.star"  # 9 of the 16 particles: 36 pairs (beside the images: same relative paths)
    write_star(read_star(sim / "sim" / "particles.star").subset(np.arange(9)), star)
    common = ["cluster", "--particles", star, "--k", 2, "--method", "fa", "--batch-size", 8, "--device", "cpu",
              "--threads", 1]
    one, two = sim / "pairs_one.star", sim / "pairs_two.star"
    gumalign(*common, "--out", one, "--quiet")
    done = torchrun(*common, "--out", two)
    assert "rank 0/2: 24 pairs" in done.stderr and "rank 1/2: 12 pairs" in done.stderr  # 36 pairs, batches of 8
    scores_one, scores_two = (np.load(p.with_name(p.stem + "_scores.npy")) for p in (one, two))
    np.testing.assert_array_equal(scores_one, scores_two)
    assert not np.any(scores_one == 0)  # every pair was scored by some rank
    assert two.read_bytes() == one.read_bytes()


def test_reference_based_clustering_on_two_ranks_equals_one_process(sim, tmp_path):
    """The core (cluster.reference_based) under torchrun; the ops layer's `cluster` does not pass it a world yet."""
    script = tmp_path / "cluster_ranks.py"
    script.write_text(
        "import sys, numpy as np\n"
        "from gumalign import distributed\n"
        "from gumalign.align.spec import AlignerSpec\n"
        "from gumalign.average.stack import StarStack\n"
        "from gumalign.cluster.reference_based import reference_based_clustering\n"
        "from gumalign.io.star import read_star\n"
        "world = distributed.init_if_launched('cpu')\n"
        "stack = StarStack(read_star(sys.argv[1]), None)\n"
        "result = reference_based_clustering(stack, AlignerSpec(method='fa', device='cpu').build(), 2, iterations=1,\n"
        "                                    batch_size=4, world=world)\n"
        "if world.is_main:\n"
        "    np.savez(sys.argv[2], labels=result.labels, scores=result.scores, references=result.references)\n"
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    star = str(sim / "sim" / "particles.star")
    one, two = tmp_path / "one.npz", tmp_path / "two.npz"
    subprocess.run([sys.executable, str(script), star, str(one)], env=env, check=True, timeout=300)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                    str(script), star, str(two)], env=env, check=True, timeout=300, capture_output=True)
    a, b = np.load(one), np.load(two)
    assert np.array_equal(a["labels"], b["labels"]) and np.array_equal(a["scores"], b["scores"])
    assert np.abs(a["references"] - b["references"]).max() <= 1e-5 * np.abs(a["references"]).max()


# -- train -------------------------------------------------------------------------------------------------------

def test_train_on_two_ranks_runs_resumes_and_makes_the_one_process_model(sim):
    import json

    from safetensors.numpy import load_file

    common = ["train", "--simulate", "builtin:proteasome", "--snr", 100, "--n-pairs", 18, "--arch", "gumnet-tiny",
              "--batch-size", 4, "--val-fraction", 0.25, "--device", "cpu", "--threads", 1]
    one, two = sim / "train_one", sim / "train_two"
    gumalign(*common, "--epochs", 2, "--out", one, "--quiet")
    first = torchrun(*common, "--epochs", 1, "--out", two)
    assert "rank 0/2: 7 training pairs per epoch" in first.stderr and "rank 1/2: 7" in first.stderr
    assert json.loads((two / "checkpoint" / "state.json").read_text())["epoch"] == 1
    torchrun(*common, "--epochs", 2, "--resume", "--out", two)
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert set(a) == set(b)
    for name in a:
        scale = 1.0 if "running" not in name else max(1.0, float(np.abs(a[name]).max()))
        assert np.abs(a[name].astype(np.float64) - b[name]).max() <= 1e-6 * scale, name
    history = [json.loads((d / "model.json").read_text())["training"]["history"] for d in (one, two)]
    assert len(history[1]) == 2
    for x, y in zip(*history):
        assert x["train_loss"] == pytest.approx(y["train_loss"], abs=1e-6)
        assert x["val"]["loss"] == pytest.approx(y["val"]["loss"], abs=1e-6)
