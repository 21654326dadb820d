"""The data card's counts, read back from the manifests a prepare wrote (the truth a run trains on).

The manifests are read one line at a time, dev and test first, so memory grows with the evaluation
splits, the speakers and the vocabulary, never with the number of clips:

* per split: utterances, hours, speakers, speaker groups (the independent unit a bootstrap resamples:
  the voice on the built-in corpus, the speaker elsewhere), rows of unknown speaker, utterances and
  hours by gender, districts;
* ``sentences``: how many dev/test utterances say a sentence that a train utterance says (the rule
  that dev/test sentences are never in train, beside the speaker rule), with up to 5 examples;
* ``vocabulary``: word types per split (after the scoring normalisation) and how many dev/test words
  (tokens and types) never occur in the train transcripts.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from avasr_cli.data.manifest import SPLITS

UNKNOWN = "unknown"
ORDER = ("dev", "test", "train", "align")  # evaluation splits first: their sentences are what train is checked against


def _key(text: str) -> bytes:
    return hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()


def _place(row: dict) -> str:
    """A district as a data card counts it: ``State/District`` when the state is known (same-named districts
    of two states stay apart)."""
    district = row.get("district") or UNKNOWN
    return f"{row['state']}/{district}" if row.get("state") else district


def _rows(path: Path):
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


def build_card(manifests: dict[str, Path], lang: str | None, unknown_speaker: str = UNKNOWN) -> dict:
    """Counts of the data card from ``manifests`` (split → path), streamed."""
    from avasr_cli.data.text import normalize_for_scoring

    counts = {s: 0 for s in SPLITS}
    seconds = {s: 0.0 for s in SPLITS}
    speakers: dict[str, set] = {s: set() for s in SPLITS}
    groups: dict[str, set] = {s: set() for s in SPLITS}
    unknown = {s: 0 for s in SPLITS}
    gender: dict[str, dict] = {s: {} for s in SPLITS}
    gender_s: dict[str, dict] = {s: {} for s in SPLITS}
    districts: dict[str, dict] = {s: {} for s in SPLITS}
    vocab: dict[str, dict] = {s: {} for s in SPLITS}
    eval_sentences: dict[bytes, list] = {}  # sentence key -> [split, utt_id] of the dev/test utterances saying it
    in_train: dict[str, int] = {"dev": 0, "test": 0}
    examples: list[str] = []
    for split in ORDER:
        path = manifests.get(split)
        if path is None or not Path(path).is_file():
            continue
        for row in _rows(Path(path)):
            counts[split] += 1
            seconds[split] += float(row.get("duration") or 0.0)
            spk = str(row.get("speaker") or unknown_speaker)
            if spk == unknown_speaker:
                unknown[split] += 1
            else:
                speakers[split].add(spk)
                groups[split].add(str(row.get("speaker_group") or spk))
            g = row.get("gender") or UNKNOWN
            gender[split][g] = gender[split].get(g, 0) + 1
            gender_s[split][g] = gender_s[split].get(g, 0.0) + float(row.get("duration") or 0.0)
            place = _place(row)
            districts[split][place] = districts[split].get(place, 0) + 1
            text = normalize_for_scoring(row.get("text") or "", lang)
            if not text:
                continue
            for w in text.split():
                vocab[split][w] = vocab[split].get(w, 0) + 1
            key = _key(text)
            if split in ("dev", "test"):
                eval_sentences.setdefault(key, []).append(split)
            elif split == "train" and key in eval_sentences:
                for s in eval_sentences.pop(key):  # count each dev/test utterance once
                    in_train[s] += 1
                    if len(examples) < 5:
                        examples.append(text)
    train_words = vocab["train"]

    def unseen(split: str) -> dict:
        tokens = sum(vocab[split].values())
        oov = {w: n for w, n in vocab[split].items() if w not in train_words}
        return {"tokens": tokens, "types": len(vocab[split]), "unseen_tokens": sum(oov.values()),
                "unseen_types": len(oov), "unseen_token_rate": round(sum(oov.values()) / tokens, 4) if tokens else 0.0}

    return dict(
        counts=counts, hours={s: round(seconds[s] / 3600, 4) for s in SPLITS},
        speakers={s: len(speakers[s]) for s in SPLITS}, speaker_ids={s: sorted(speakers[s]) for s in SPLITS},
        speaker_groups={s: len(groups[s]) for s in SPLITS}, unknown_speaker_rows=unknown,
        utterances_by_gender={s: dict(sorted(gender[s].items())) for s in SPLITS},
        hours_by_gender={s: {k: round(v / 3600, 4) for k, v in sorted(gender_s[s].items())} for s in SPLITS},
        districts={s: dict(sorted(districts[s].items())) for s in SPLITS},
        sentences=dict(rule="no dev/test sentence (after the scoring normalisation) is said in train",
                       dev_in_train=in_train["dev"], test_in_train=in_train["test"], examples=examples,
                       passed=not any(in_train.values())),
        vocabulary=dict({s: len(vocab[s]) for s in SPLITS}, all=len(set().union(*map(set, vocab.values()))),
                        dev_vs_train=unseen("dev"), test_vs_train=unseen("test")),
    )
