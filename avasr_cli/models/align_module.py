"""The alignment stage as one LightningModule: a FastConformer encoder trained either towards a vision
encoder's space (image objective) or with NeMo's masked-token-prediction objective (audio-only control).

Both objectives share the encoder, the data order, the batch, the optimiser and the schedule, so the
audio-only control differs from the image arm only in what the encoder is asked to predict.

``align_layer`` picks the conformer layer whose output is aligned (default: the last). The module then
holds only the subsampling and the layers up to it; the layers after it take no part in the forward
pass, so no objective trains them: they are kept as they were at the start and written back unchanged
into the aligned encoder (:meth:`AlignModule.encoder_state`), for fine-tuning to train with the rest.
"""

from __future__ import annotations

import math

import lightning.pytorch as pl
import torch
from torch import nn

from avasr_cli.errors import ConfigError
from avasr_cli.models.audio_data import BucketBatchSampler, PairCollate, PairDataset, collate
from avasr_cli.models.fastconformer import EncoderBundle
from avasr_cli.models.losses import LOSSES, masked_mean, maxsim_scores, world
from avasr_cli.models.param_groups import build_param_groups
from avasr_cli.models.ssl import build_objective


def resolve_layer(index: int | None, n_layers: int) -> int:
    """``--align-layer``: an index into the conformer layers (negative counts from the last; None = the
    last) → the 0-based layer."""
    if index is None:
        return n_layers - 1
    if not -n_layers <= index < n_layers:
        raise ConfigError(f"--align-layer {index}: the encoder has {n_layers} conformer layers",
                          f"use 0..{n_layers - 1}, or -1..-{n_layers} counted back from the last")
    return index % n_layers


def _after(key: str, layer: int) -> bool:
    """Is encoder state ``key`` above ``layer`` (a later conformer layer, or the output projection)?"""
    parts = key.split(".")
    return (parts[0] == "layers" and int(parts[1]) > layer) or parts[0] == "out_proj"


def truncated_encoder(bundle: EncoderBundle, layer: int):
    """The encoder up to conformer ``layer`` → (module, the state of the layers after it)."""
    n = int(bundle.encoder["n_layers"])
    if layer == n - 1:
        return bundle.build_encoder(), {}
    config = dict(bundle.encoder, n_layers=layer + 1)
    if int(config.get("feat_out", -1) or -1) > 0:
        config["feat_out"] = -1  # the output projection belongs to the last layer: kept aside with it
    kept = {k: v for k, v in bundle.state_dict.items() if not _after(k, layer)}
    tail = {k: v.detach().clone() for k, v in bundle.state_dict.items() if _after(k, layer)}
    return EncoderBundle(bundle.preprocessor, config, kept, bundle.source, []).build_encoder(), tail


class AlignModule(pl.LightningModule):
    def __init__(self, bundle: EncoderBundle, *, objective: str, loss: str = "clip", vision_dim: int = 0,
                 rows: list[dict] | None = None, image_index: dict[str, int] | None = None,
                 store_path: str | None = None,
                 batch_size: int = 16, lr: float = 1e-3, weight_decay: float = 1e-3, warmup_steps: int = 50,
                 max_steps: int = 1000, seed: int = 0, freeze_layers: int = 0, num_workers: int = 2,
                 ssl: dict | None = None, head_lr_ratio: float = 1.0, layer_decay: float = 1.0,
                 align_layer: int | None = None, loss_kwargs: dict | None = None):
        super().__init__()
        pre = dict(bundle.preprocessor, pad_to=16)  # frames divisible by the 8x subsampling
        self.preprocessor = EncoderBundle(pre, bundle.encoder, {}, "", []).build_preprocessor()
        self.align_layer = resolve_layer(align_layer, int(bundle.encoder["n_layers"]))
        self.encoder, self._tail = truncated_encoder(bundle, self.align_layer)
        d = bundle.d_model
        self.objective, self.loss_name = objective, loss
        if objective == "image":
            self.head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, vision_dim))
            self.loss_fn = LOSSES[loss](**(loss_kwargs or {}))  # e.g. siglip's init_bias
        else:
            self.ssl = build_objective(int(pre["features"]), d, int(bundle.encoder.get("subsampling_factor", 8)),
                                       **(ssl or {}))
        self.rows, self.image_index = rows or [], image_index or {}
        # image features are read per batch from the memory-mapped store by the DataLoader workers
        self.collate = PairCollate(store_path if objective == "image" else None, patches=loss == "maxsim")
        self.hp = dict(batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_steps=warmup_steps,
                       max_steps=max_steps, seed=seed, num_workers=num_workers, head_lr=lr * head_lr_ratio,
                       layer_decay=layer_decay)
        self._freeze(freeze_layers)

    def encoder_state(self) -> dict:
        """The whole encoder's weights: the trained layers and, after the aligned layer, the untouched ones."""
        state = {k: v.detach().cpu().clone() for k, v in self.encoder.state_dict().items()}
        return {**self._tail, **state}

    def _freeze(self, n: int) -> None:
        if n <= 0:
            return
        for p in self.encoder.pre_encode.parameters():
            p.requires_grad_(False)
        for layer in self.encoder.layers[:n]:
            for p in layer.parameters():
                p.requires_grad_(False)

    # ---------------------------------------------------------------------------------------- forward
    def encode(self, audio: torch.Tensor, lengths: torch.Tensor, mask: bool = False):
        spec, spec_len = self.preprocessor(input_signal=audio, length=lengths)
        extra = {}
        if self.objective != "image":
            _, tokens = self.ssl.quantizer(input_signal=spec)
            if mask:
                spec, masks = self.ssl.masking(input_feats=spec, input_lengths=spec_len)
            else:
                masks = torch.zeros_like(spec)
            extra = {"tokens": tokens, "masks": masks}
        enc, enc_len = self.encoder(audio_signal=spec, length=spec_len)
        return enc, enc_len, extra  # enc: [B, D, T]

    def audio_embeddings(self, audio: torch.Tensor, lengths: torch.Tensor):
        enc, enc_len, _ = self.encode(audio, lengths)
        frames = self.head(enc.transpose(1, 2))
        return frames, enc_len

    def compute_loss(self, audio, lengths, images, pooled=None, patches=None) -> torch.Tensor:
        if self.objective != "image":
            enc, enc_len, extra = self.encode(audio, lengths, mask=True)
            log_probs = self.ssl.decoder(encoder_output=enc)
            return self.ssl.loss(masks=extra["masks"], decoder_outputs=log_probs, targets=extra["tokens"],
                                 decoder_lengths=enc_len)
        frames, enc_len = self.audio_embeddings(audio, lengths)
        if self.loss_name == "maxsim":
            return self.loss_fn(frames, enc_len, patches.float(), images)
        return self.loss_fn(masked_mean(frames, enc_len), pooled.float(), images)

    def training_step(self, batch, batch_idx):
        audio, lengths, images, pooled, patches = batch
        if self.loss_name == "maxsim" and self.objective == "image" and world()[1] > 1:
            audio = _pad_to(audio, self._max_samples)  # equal frame counts on every rank for the gather
        loss = self.compute_loss(audio, lengths, images, pooled, patches)
        self.log("train_loss", loss, prog_bar=True, batch_size=audio.shape[0])
        return self.ddp_scaled(loss)

    def ddp_scaled(self, loss: torch.Tensor) -> torch.Tensor:
        """Contrastive losses cover the gathered global batch on every rank, and DDP averages gradients
        over ranks: scaling by the world size makes the update equal the single-process one."""
        return loss * world()[1] if self.objective == "image" else loss

    # ---------------------------------------------------------------------------------------- data/optim
    def train_dataloader(self):
        from torch.utils.data import DataLoader

        rank, size = (self.trainer.global_rank, self.trainer.world_size) if self._trainer else (0, 1)
        self._sampler = BucketBatchSampler([float(r["duration"]) for r in self.rows], self.hp["batch_size"],
                                           self.hp["seed"], rank, size)
        self._max_samples = int(max(float(r["duration"]) for r in self.rows) * 16000) + 1
        workers = self.hp["num_workers"]
        return DataLoader(PairDataset(self.rows, self.image_index), batch_sampler=self._sampler, collate_fn=self.collate,
                          num_workers=workers, persistent_workers=workers > 0, pin_memory=torch.cuda.is_available())

    def on_train_start(self):
        self.train()  # whatever ran before fit (a recall measurement) must not leave dropout/BatchNorm off

    def on_train_epoch_start(self):
        # Lightning tells only ``sampler`` and ``batch_sampler.sampler`` the epoch, never a batch sampler
        # itself: without this every epoch would repeat the same batches (and the same negatives)
        self._sampler.set_epoch(self.current_epoch)

    def param_groups(self) -> list[dict]:
        """Encoder vs head rates, optional layer decay, no decay on biases/norms/temperature
        (:mod:`avasr_cli.models.param_groups`); the same encoder groups for both objectives."""
        return build_param_groups(self, self.encoder, lr=self.hp["lr"], head_lr=self.hp["head_lr"],
                                  weight_decay=self.hp["weight_decay"], layer_decay=self.hp["layer_decay"])

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.param_groups(), lr=self.hp["lr"], betas=(0.9, 0.98))
        warm, total = max(1, self.hp["warmup_steps"]), max(1, self.hp["max_steps"])

        def schedule(step: int) -> float:  # linear warm-up, cosine decay to 1% of the peak
            if step < warm:
                return (step + 1) / warm
            progress = min(1.0, (step - warm) / max(1, total - warm))
            return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * progress))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _pad_to(audio: torch.Tensor, n: int) -> torch.Tensor:
    if audio.shape[1] >= n:
        return audio
    return torch.nn.functional.pad(audio, (0, n - audio.shape[1]))


@torch.no_grad()
def retrieval_recall(module: AlignModule, rows: list[dict], batch_size: int = 16, ks=(1, 5, 10)) -> dict:
    """Audio→image and image→audio recall@k over ``rows`` (held-out or training pairs), ranking each clip
    against the images of ``rows``; pairs sharing an image count as hits. The module's train/eval mode
    is restored afterwards."""
    from avasr_cli.models.audio_data import read_clip

    was_training = module.training
    module.eval()
    try:
        return _recall(module, rows, batch_size, ks, read_clip)
    finally:
        module.train(was_training)


def _recall(module: AlignModule, rows: list[dict], batch_size: int, ks, read_clip) -> dict:
    device = next(module.parameters()).device
    keys = [module.image_index[r["image_sha256"]] for r in rows]
    audio_vecs, frames_all = [], []
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        audio, lengths, _ = collate([(torch.from_numpy(read_clip(r)), 0, "") for r in chunk])
        frames, enc_len = module.audio_embeddings(audio.to(device), lengths.to(device))
        if module.loss_name == "maxsim":
            frames_all += [(frames[i, : enc_len[i]].cpu()) for i in range(len(chunk))]
        else:
            audio_vecs.append(masked_mean(frames, enc_len).cpu())
    uniq = sorted(set(keys))
    col = {k: j for j, k in enumerate(uniq)}
    sha_of = {i: s for s, i in module.image_index.items()}
    pooled, patches = module.collate.features([sha_of[k] for k in uniq])
    if module.loss_name == "maxsim":
        patches = patches.float()
        sim = torch.cat([maxsim_scores(f[None], torch.tensor([f.shape[0]]), patches) for f in frames_all])
    else:
        a = torch.nn.functional.normalize(torch.cat(audio_vecs), dim=-1)
        v = torch.nn.functional.normalize(pooled.float(), dim=-1)
        sim = a @ v.t()  # [N audio, M images]
    truth = torch.tensor([col[k] for k in keys])
    result = {"num_pairs": len(rows), "num_images": len(uniq)}
    a2i_rank = (sim > sim[torch.arange(len(keys)), truth][:, None]).sum(1)  # 0 = best
    for k in ks:
        result[f"a2i_r@{k}"] = float((a2i_rank < k).float().mean())
    # image→audio: for each image, rank the audio clips; a hit is any clip of that image in the top k
    order = sim.t().argsort(dim=1, descending=True)
    for k in ks:
        hits = [(truth[order[j, :k]] == j).any().item() for j in range(len(uniq))]
        result[f"i2a_r@{k}"] = float(sum(hits) / len(hits))
    result["chance_a2i_r@1"] = 1.0 / len(uniq)
    return result
