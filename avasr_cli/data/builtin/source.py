"""The built-in corpus as a prepare source: manifest rows streamed from the cached corpus (files layout)
or its shards (``--audio-layout shards``, :mod:`avasr_cli.data.builtin.packed`), and its data-card facts."""

from __future__ import annotations

from pathlib import Path

from avasr_cli.data.manifest import SPLITS, Rows, SourceData
from avasr_cli.errors import InputError
from avasr_cli.progress import Reporter


def builtin_source(cfg, rep: Reporter, verify: bool = False):
    """The rows of ``avasr prepare --source builtin`` (``cfg``: its PrepareConfig)."""
    from avasr_cli.data.builtin import CorpusConfig, generate_corpus, held_out_sentence

    corpus_cfg = CorpusConfig(lang=cfg.lang, seed=cfg.seed, num_align=cfg.num_align, num_train=cfg.num_train,
                              num_dev=cfg.num_dev, num_test=cfg.num_test)
    if cfg.audio_layout == "shards":
        return _builtin_packed(cfg, corpus_cfg, rep, verify)
    corpus = generate_corpus(corpus_cfg, rep)
    wrong_side = 0  # a sentence said on the other side of the dev/test sentence rule (a generator bug)
    voices: dict[str, set] = {s: set() for s in SPLITS}
    for r in corpus.iter_rows():  # one streamed pass: the sentence rule and the voices of each split
        wrong_side += held_out_sentence(r["text"]) != (r["split"] in ("dev", "test"))
        voices[r["split"]].add(r["voice"])
    if wrong_side:
        raise InputError(f"the built-in corpus in {corpus.dir} breaks its sentence rule ({wrong_side} utterances)",
                         "delete that folder and rerun `avasr prepare` to generate it again")

    def manifest_row(r: dict) -> dict:
        row = dict(audio_filepath=str(corpus.dir / r["audio"]), duration=r["duration"],
                   text="" if r["split"] == "align" else r["text"])
        if r["split"] != "align":
            row["text_raw"] = r["text"]
        row.update(image_filepath=str(corpus.dir / r["image"]), image_sha256=r["image_sha256"], utt_id=r["utt_id"],
                   speaker=r["speaker"], speaker_group=r["group"], lang=cfg.lang, gender=r["gender"])
        return row

    def split_rows(split: str) -> Rows:
        return Rows(lambda: map(manifest_row, corpus.iter_rows(split)))

    card = _builtin_card(cfg, corpus.dir, corpus.info, {s: sorted(voices[s]) for s in SPLITS})
    return SourceData({s: split_rows(s) for s in SPLITS}, corpus.dir, corpus.reused, card)


def _builtin_card(cfg, root: Path, info: dict, voices: dict) -> dict:
    from avasr_cli.data.builtin import LANGUAGES, word_classes

    return dict(corpus=dict(kind="builtin", dir=str(root), **info), voices=voices, speaker_group_unit="voice",
                sentence_rule="a sentence's hash decides whether dev/test or train/align may say it "
                              "(avasr_cli.data.builtin.scenes.held_out_sentence): no align or train utterance "
                              "says a dev/test sentence (checked over every utterance, align included)",
                word_classes=word_classes(LANGUAGES[cfg.lang]))


def _builtin_packed(cfg, corpus_cfg, rep: Reporter, verify: bool = False):
    """The built-in corpus rendered straight into shards (avasr_cli.data.builtin.packed): no file per clip."""
    from avasr_cli.data.builtin.packed import generate_packed
    from avasr_cli.data.shards import ShardRows

    corpus = generate_packed(corpus_cfg, cfg.shard_clips, rep, verify=verify)
    info = dict(corpus.info)
    voices, wrong_side = info.pop("voices"), info.pop("sentence_rule_breaks")
    if wrong_side:
        raise InputError(f"the built-in corpus in {corpus.dir} breaks its sentence rule ({wrong_side} utterances)",
                         "delete that folder and rerun `avasr prepare` to generate it again")
    return SourceData({s: ShardRows(corpus.dir / s) for s in SPLITS}, corpus.dir, corpus.reused,
                      _builtin_card(cfg, corpus.dir, info, voices))
