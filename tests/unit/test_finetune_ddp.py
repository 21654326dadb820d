"""Fine-tuning in 2 CPU processes (gloo DDP through Lightning's own launcher): each rank reads a disjoint
part of the train split, together all of it, in a new order every epoch (NeMo's loaders rely on
Lightning's DistributedSampler, which an earlier ``use_distributed_sampler=False`` had switched off)."""

import json
import os
import subprocess
import sys
import textwrap
from collections import Counter

import pytest
import soundfile as sf

pytestmark = pytest.mark.slow

DRIVER = textwrap.dedent('''
    """Run by the test as a script: Lightning's DDP launcher starts rank 1 by running it again."""
    import json, os, sys
    from pathlib import Path
    import lightning.pytorch as pl
    from avasr_cli.run import RunDir
    from avasr_cli.stages.finetune import FinetuneConfig, run_finetune

    run_dir, out, procs = Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3])

    class Record(pl.Callback):
        """Each rank writes the (samples, reference tokens) key of every utterance it trains on, per epoch."""
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            signal, signal_len, tokens, tokens_len = batch[:4]
            keys = [[int(signal_len[i]), tokens[i, : int(tokens_len[i])].tolist()] for i in range(len(signal_len))]
            with open(out / f"rank{trainer.global_rank}.jsonl", "a") as f:
                f.write(json.dumps({"epoch": trainer.current_epoch, "keys": keys, "world": trainer.world_size}) + "\\n")

    cfg = FinetuneConfig(decoder="ctc", init="tiny", max_steps=int(sys.argv[4]), batch_size=2, val_every=1000,
                         workers=0, cpu_procs=procs, spec_augment=False, vocab_size=32)
    run_finetune(RunDir(run_dir), cfg, callbacks=[Record()])
''')


def _records(out):
    return {p.stem: [json.loads(line) for line in p.read_text().splitlines()] for p in sorted(out.glob("rank*.jsonl"))}


def test_two_process_finetune_reads_disjoint_shards_that_cover_the_split(run, tmp_path):
    train = [json.loads(line) for line in run.manifest("train").read_text().splitlines()]
    n = len(train)
    assert n % 2 == 0  # 2 ranks: no padding samples from the DistributedSampler
    steps_per_epoch = -(-n // 4)  # ceil(n / 2 ranks / batch 2)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    out = tmp_path / "out"
    out.mkdir()
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=os.getcwd())
    proc = subprocess.run([sys.executable, str(driver), str(run.root), str(out), "2", str(2 * steps_per_epoch)],
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    recs = _records(out)
    assert set(recs) == {"rank0", "rank1"} and all(r["world"] == 2 for rs in recs.values() for r in rs)
    frames = sorted(sf.info(row["audio_filepath"]).frames for row in train)
    for epoch in (0, 1):
        per_rank = {rank: [tuple([k[0], tuple(k[1])]) for r in rs if r["epoch"] == epoch for k in r["keys"]]
                    for rank, rs in recs.items()}
        assert all(len(keys) == n // 2 for keys in per_rank.values()), {k: len(v) for k, v in per_rank.items()}
        union = Counter(per_rank["rank0"]) + Counter(per_rank["rank1"])
        assert sum(union.values()) == n
        # every utterance once in the epoch, across both ranks: the lengths in samples are those of the
        # manifest's audio (NeMo's decoder may differ from the file header by a sample)
        seen = sorted(k[0] for k in union.elements())
        assert all(abs(a - b) <= 2 for a, b in zip(seen, frames)) and len(seen) == len(frames)
    # a new order every epoch: the DistributedSampler is reseeded by epoch
    order = {e: [tuple(k[0:1]) for r in recs["rank0"] if r["epoch"] == e for k in r["keys"]] for e in (0, 1)}
    assert order[0] != order[1]
    budget = json.loads((run.root / "finetune" / "budget.json").read_text())
    assert budget["world_size"] == 2 and budget["effective_batch"] == 4


def test_two_node_launch_on_one_machine(run, tmp_path):
    """What a 2-node torchrun/SLURM job does, on one machine: two processes started by hand, one per
    "node" (NODE_RANK 0 and 1, one process each, gloo), sharing the run directory. Lightning wires them
    from the environment; node 1 trains and exits quietly, node 0 alone records the stage."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-m", "avasr_cli", "-r", str(run.root), "align", "--max-steps", "3", "--batch-size", "4",
           "--workers", "0", "--nodes", "2", "--cpu-procs", "1", "--checkpoint-every", "3"]
    procs = []
    for node in (0, 1):
        base = {k: v for k, v in os.environ.items()  # nothing an earlier in-process run left behind
                if k not in ("AVASR_RUN_DIR", "RANK", "GROUP_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
                and not k.startswith(("PL_", "SLURM_", "TORCHELASTIC_"))}
        env = dict(base, HF_HUB_OFFLINE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
                   NODE_RANK=str(node), LOCAL_RANK="0", WORLD_SIZE="2")
        procs.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [p.communicate(timeout=900)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs[0][-2000:] + outs[1][-2000:]
    record = json.loads((run.root / "run.json").read_text())["stages"]["align"]
    assert record["result"]["world_size"] == 2 and record["result"]["effective_batch"] == 8
    assert record["config"]["nodes"] == 2
