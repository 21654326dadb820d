"""Lightning trainers for align and finetune: ``--gpus N --nodes M`` → DDP, CPU when N is 0,
checkpoints every K steps, resume from the last one, progress through the stage's Reporter."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl

from avasr_cli.errors import ConfigError, ResourceError


@dataclass(frozen=True)
class Hardware:
    accelerator: str
    devices: int
    num_nodes: int
    strategy: str
    precision: str

    @property
    def world_size(self) -> int:
        return self.devices * self.num_nodes

    @property
    def sync_batchnorm(self) -> bool:
        """BatchNorm statistics synchronised across ranks: under DDP on GPUs (torch's SyncBatchNorm has no
        CPU implementation)."""
        return self.world_size > 1 and self.accelerator == "gpu"


def resolve_hardware(gpus: int, nodes: int, cpu_procs: int = 1, precision: str = "auto") -> Hardware:
    import torch

    if gpus > 0:
        have = torch.cuda.device_count()
        if have == 0:
            raise ResourceError(f"--gpus {gpus}: this machine has no CUDA GPU",
                                "use --gpus 0 to train on the CPU (slow), or run on a GPU node")
        if gpus > have:
            raise ResourceError(f"--gpus {gpus}: this machine has only {have} GPU(s)", f"use --gpus {have} or fewer")
        if precision == "auto":
            precision = "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
        devices, accel = gpus, "gpu"
    else:
        if precision == "auto":
            precision = "32-true"
        if precision not in ("32-true", "32", "bf16-mixed"):
            raise ConfigError(f"--precision {precision} is not supported on the CPU", "use --precision 32-true")
        devices, accel = max(1, cpu_procs), "cpu"
    world = devices * nodes
    strategy = "ddp" if world > 1 else "auto"
    return Hardware(accel, devices, nodes, strategy, precision)


class ReporterCallback(pl.Callback):
    """Advances a Reporter task as steps finish (rank 0 only) and shows the running loss."""

    def __init__(self, task, every: int = 1, skip: int = 5):
        self.task, self.every, self.skip = task, every, skip
        self.times: list[float] = []

    @property
    def step_seconds(self) -> float | None:
        """Steady-state seconds per training batch (the first ``skip`` batches, warm-up, excluded)."""
        t = self.times[self.skip :] if len(self.times) > self.skip + 1 else self.times
        return (t[-1] - t[0]) / (len(t) - 1) if len(t) > 1 else None

    def on_train_start(self, trainer, pl_module):
        if trainer.global_rank == 0 and trainer.global_step:
            self.task.advance(trainer.global_step)  # resumed

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_rank != 0:
            return
        import time

        self.times.append(time.perf_counter())
        self.task.advance(1)
        loss = trainer.callback_metrics.get("train_loss")
        if loss is not None and trainer.global_step % self.every == 0:
            self.task.update(loss=f"{float(loss):.3f}")


def quiet_libraries() -> None:
    """Keep Lightning's and NeMo's info chatter off the user's terminal (AVASR_DEBUG=1 shows it)."""
    import logging
    import warnings

    if os.environ.get("AVASR_DEBUG", "") not in ("", "0"):
        return
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "pytorch_lightning", "nv_one_logger"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    try:
        from nemo.utils import logging as nemo_logging

        nemo_logging.setLevel(logging.ERROR)
    except ImportError:
        pass
    warnings.filterwarnings("ignore", category=UserWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)


def make_trainer(hw: Hardware, *, max_steps: int, ckpt_dir: Path, every: int, callbacks=(), accumulate: int = 1,
                 val_every: int | None = None, monitor: str | None = None, mode: str = "min",
                 log_dir: Path | None = None, resuming: bool = False,
                 distributed_sampler: bool = False, epoch_batches: int | None = None) -> pl.Trainer:
    """``distributed_sampler``: let Lightning give each rank a disjoint part of a map-style loader's data
    (a ``DistributedSampler``, reshuffled every epoch), as NeMo's own ASR loaders expect; stages with
    their own rank-aware batch sampler (align, pretrain) leave it off. Under DDP BatchNorm statistics
    are synchronised across ranks (``sync_batchnorm``), as in NeMo's FastConformer SSL configs.

    ``log_dir``: where TensorBoard event files go (train loss, learning rate, gradient norm, and
    whatever the module logs, e.g. NeMo's ``val_wer``); ``tensorboard --logdir runs`` finds them. A run
    that starts afresh (not ``resuming``) clears the curves of an earlier run there first.

    ``epoch_batches``: batches that make an epoch of a streamed (iterable, endless) loader, NeMo's tarred
    shards: Lightning then counts epochs, and NeMo does not try to take the length of the stream."""
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint

    quiet_libraries()
    logger, monitors = False, []
    if log_dir is not None:
        import shutil

        from lightning.pytorch.loggers import TensorBoardLogger

        if not resuming:
            shutil.rmtree(log_dir, ignore_errors=True)

        # name="" and version="": one fixed directory, so a resumed run appends to the same curves
        logger = TensorBoardLogger(save_dir=str(log_dir), name="", version="", default_hp_metric=False)
        monitors = [LearningRateMonitor(logging_interval="step"), GradNormLogger()]

    os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "1")
    ckpts = [ModelCheckpoint(dirpath=str(ckpt_dir), filename="step{step}", every_n_train_steps=max(1, every),
                             save_last=True, save_top_k=-1 if monitor is None else 0, auto_insert_metric_name=False)]
    if monitor is not None:
        ckpts.append(ModelCheckpoint(dirpath=str(ckpt_dir), filename="best", monitor=monitor, mode=mode,
                                     save_top_k=1, auto_insert_metric_name=False))
    return pl.Trainer(
        accelerator=hw.accelerator,
        devices=hw.devices,
        num_nodes=hw.num_nodes,
        strategy=hw.strategy,
        precision=hw.precision,
        max_steps=max_steps,
        max_epochs=-1,
        accumulate_grad_batches=accumulate,
        gradient_clip_val=1.0,
        logger=logger,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        callbacks=[*ckpts, PruneCheckpoints(ckpt_dir, every), *monitors, *callbacks],
        use_distributed_sampler=distributed_sampler,
        sync_batchnorm=hw.sync_batchnorm,
        check_val_every_n_epoch=None if val_every else 1,
        val_check_interval=val_every,
        limit_val_batches=1.0 if val_every else 0,
        limit_train_batches=epoch_batches if epoch_batches else 1.0,
        log_every_n_steps=max(1, min(10, max_steps // 20)),
        default_root_dir=str(ckpt_dir.parent),
    )


def _step_of(path: Path) -> int:
    digits = "".join(c for c in path.stem if c.isdigit())
    return int(digits) if digits else -1


def _checkpoint_globals() -> list:
    """Besides tensors and containers, NeMo's Lightning checkpoints hold the model config as OmegaConf
    objects: allow exactly those, nothing else, in the weights-only unpickler."""
    import collections
    import typing

    from omegaconf import DictConfig, ListConfig
    from omegaconf.base import ContainerMetadata, Metadata
    from omegaconf.nodes import AnyNode, BooleanNode, FloatNode, IntegerNode, StringNode

    return [DictConfig, ListConfig, ContainerMetadata, Metadata, AnyNode, StringNode, IntegerNode, FloatNode,
            BooleanNode, typing.Any, dict, list, collections.defaultdict, int, float, str, bool]


def last_checkpoint(ckpt_dir: Path, warn=None) -> Path | None:
    """The newest checkpoint that loads with ``weights_only=True`` (safe, and not truncated by a kill):
    ``last.ckpt``, else the step checkpoints from the newest down."""
    import torch

    candidates = [ckpt_dir / "last.ckpt"] + sorted(ckpt_dir.glob("step*.ckpt"), key=_step_of, reverse=True)
    for path in candidates:
        if not path.is_file():
            continue
        try:
            with torch.serialization.safe_globals(_checkpoint_globals()):
                state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated, corrupt, or not plain tensors/containers
            if warn:
                warn(f"ignoring checkpoint {path}: it does not load safely ({type(exc).__name__})")
            continue
        if isinstance(state, dict) and "global_step" in state and "state_dict" in state:
            return path
    return None


def checkpoints_for(ckpt_dir: Path, config: dict, rep, inputs: dict | None = None) -> Path | None:
    """The checkpoint to resume from: only one written with the same options (``resume`` aside) **and**
    the same inputs (``inputs``: what the stage consumed, e.g. manifest hashes, the starting encoder's
    hash, the feature store), and none when ``resume`` is off. Checkpoints of other options or inputs are
    discarded, and the log says which option or input changed."""
    import json
    import shutil

    from avasr_cli.run import write_json_atomic

    stamp = ckpt_dir / "config.json"
    wanted = json.loads(json.dumps({"options": {k: v for k, v in config.items() if k != "resume"},
                                    "inputs": inputs or {}}, default=str))
    if ckpt_dir.exists():
        try:
            old = json.loads(stamp.read_text())
        except (OSError, ValueError):
            old = None
        if old != wanted or not config.get("resume", True):
            rep.log(f"discarding checkpoints in {ckpt_dir}, starting afresh: " + _why_stale(old, wanted, config))
            shutil.rmtree(ckpt_dir)
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic(stamp, wanted)
    return last_checkpoint(ckpt_dir, rep.warn)


def _why_stale(old: dict | None, wanted: dict, config: dict) -> str:
    if not config.get("resume", True):
        return "--no-resume"
    if not isinstance(old, dict) or "options" not in old:
        return "they carry no record of their options and inputs"
    changed = [f"--{k.replace('_', '-')}" for k in sorted(set(old["options"]) | set(wanted["options"]))
               if old["options"].get(k) != wanted["options"].get(k)]
    changed += [k for k in sorted(set(old.get("inputs") or {}) | set(wanted["inputs"]))
                if (old.get("inputs") or {}).get(k) != wanted["inputs"].get(k)]
    return "they were written with another " + ", ".join(changed) if changed else "they belong to another run"


class GradNormLogger(pl.Callback):
    """Logs the global L2 norm of the gradients (before clipping) at every optimiser step."""

    def on_before_optimizer_step(self, trainer, pl_module, optimizer):
        import torch

        if (trainer.global_step + 1) % trainer.log_every_n_steps:
            return  # only on the steps Lightning logs: a norm per step costs a visible share of a small model's step
        grads = [p.grad for p in pl_module.parameters() if p.grad is not None]
        if grads:
            pl_module.log("grad_norm", torch.nn.utils.get_total_norm(grads, 2.0), on_step=True, on_epoch=False)


class BestWeights(pl.Callback):
    """Keeps the weights with the lowest ``metric`` (NeMo logs ``val_wer``) in a plain tensor file that
    loads with ``weights_only=True``; the best value travels in Lightning checkpoints for resume."""

    def __init__(self, path: Path, metric: str = "val_wer"):
        self.path, self.metric, self.best = path, metric, None

    def on_validation_end(self, trainer, pl_module):
        value = trainer.callback_metrics.get(self.metric)
        if value is None or trainer.global_rank != 0 or trainer.sanity_checking:
            return
        if self.best is None or float(value) < self.best:
            import torch

            from avasr_cli.run import atomic_path

            self.best = float(value)
            with atomic_path(self.path) as tmp:
                torch.save({k: v.detach().cpu() for k, v in pl_module.state_dict().items()}, tmp)

    def state_dict(self):
        return {"best": self.best}

    def load_state_dict(self, state):
        self.best = state.get("best")


class PruneCheckpoints(pl.Callback):
    """Keep only the newest ``keep`` step checkpoints (plus last.ckpt) so long runs do not fill the disk;
    looks at the directory only on the steps a checkpoint is written."""

    def __init__(self, ckpt_dir: Path, every: int, keep: int = 2):
        self.ckpt_dir, self.every, self.keep = ckpt_dir, max(1, every), keep

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_rank != 0 or trainer.global_step % self.every:
            return
        steps = sorted(self.ckpt_dir.glob("step*.ckpt"), key=_step_of, reverse=True)
        for old in steps[self.keep :]:
            old.unlink(missing_ok=True)


def launch_rank(devices: int) -> int:
    """This process's global rank as its launcher set it (Lightning's children, torchrun, SLURM); 0 for the
    process that starts the others."""
    env = os.environ
    if env.get("RANK", "").isdigit():
        return int(env["RANK"])
    if env.get("SLURM_PROCID", "").isdigit():
        return int(env["SLURM_PROCID"])
    node, local = env.get("NODE_RANK", "0"), env.get("LOCAL_RANK", "0")
    return (int(node) if node.isdigit() else 0) * devices + (int(local) if local.isdigit() else 0)


def launch_processes(gpus: int, nodes: int, cpu_procs: int, command: str):
    """Several processes for a stage that does not train (``embed-images``, ``evaluate``): a Lightning
    Fabric DDP launch, the same launcher as the Trainer's (``--gpus N``, ``--cpu-procs N``, ``--nodes M``,
    or under torchrun/SLURM). Returns the launched Fabric, or ``None`` for one process."""
    world = max(gpus, cpu_procs if gpus == 0 else 1) * nodes
    if world == 1:
        from avasr_cli.run import is_secondary_rank

        if is_secondary_rank():  # torchrun/SLURM started several processes, the options say one
            raise ConfigError("this process is one of several (RANK/LOCAL_RANK/NODE_RANK/SLURM_PROCID set) but "
                              "--gpus/--cpu-procs/--nodes describe one process",
                              f"pass --gpus N --nodes M matching the launch, or run {command} without torchrun/srun")
        return None
    from lightning.fabric import Fabric

    hw = resolve_hardware(gpus, nodes, cpu_procs)
    fabric = Fabric(accelerator=hw.accelerator, devices=hw.devices, num_nodes=hw.num_nodes, strategy="ddp")
    fabric.launch()
    return fabric


def teardown_distributed() -> None:
    """After a DDP fit, rank-0-only inference hangs on a collective unless the group is destroyed."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
