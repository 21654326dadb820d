"""What the built-in corpus says and shows: scenes, sentences, speakers, and the plan of every utterance.

A scene is one or two groups of objects (count, size, colour, shape), laid out freely, in the middle,
left and right, or top and bottom, on a coloured background. Its sentence describes the groups (and
says where they are when the layout places them) and often adds words no picture shows: who drew or
sent the picture and when or where, or a comment about it (:mod:`lexicon`). Each alignment image is
described twice, each time with its own extra words.

Rules the plan keeps, checked again in the data card:

* **speakers**: dev and test have voices of their own (:data:`HELD_OUT` per gender), never heard in
  train, align or the pretraining pool; a voice is the independent unit of the built-in corpus (its two
  speakers differ only in rate and pitch);
* **sentences**: no dev or test sentence occurs in train or align: a sentence's hash decides which side
  may say it (:func:`held_out_sentence`), and a draw on the wrong side is drawn again;
* **pool**: one scene type in :data:`RESERVED_EVERY` belongs to the pretraining pool only.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

from avasr_cli.data.builtin.lexicon import LANGUAGES, SHAPES, Language, nfc

CORPUS_VERSION = 3  # 3: 200+ words, sizes and positions, sentence-disjoint dev/test, 16 test and 8 dev voices
SPLITS = ("align", "train", "dev", "test")
RESERVED_EVERY = 5
COLOURS_RGB = dict(red=(215, 35, 35), blue=(35, 75, 215), green=(35, 155, 55), yellow=(240, 205, 25),
                   black=(20, 20, 20), white=(245, 245, 245), orange=(245, 130, 20), purple=(125, 45, 170),
                   pink=(240, 110, 180), brown=(120, 70, 30), grey=(150, 150, 150))
# backgrounds are pale tones named by a colour word (spoken in some sentences)
BACKGROUNDS = (("grey", (128, 128, 128)), ("brown", (176, 150, 120)), ("blue", (120, 150, 190)),
               ("green", (135, 175, 135)), ("purple", (165, 145, 190)), ("pink", (225, 180, 195)),
               ("yellow", (225, 210, 150)))
FEMALE_VOICES = ("f1", "f2", "f3", "f4", "f5", "Alicia", "Andrea", "Annie", "anika", "aunty", "belinda", "linda",
                 "steph", "steph2", "steph3", "grandma")
OTHER_VOICES = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "m8", "Andy", "Denis", "Diogo", "Henrique", "Hugo",
                "Marco", "antonio", "michel", "miguel", "sandro", "travis", "victor", "Lee", "Alex", "Gene",
                "Jacky", "Mario", "Michael", "Mike", "Nguyen", "Reed", "adam", "benjamin", "boris", "caleb",
                "david", "ed", "edward", "gustave", "ian", "iven", "john", "klatt", "klatt2", "klatt3", "marcelo",
                "max", "norbert", "pablo", "paul", "pedro", "quincy", "rob", "robert", "shelby", "zac")
HELD_OUT = {"test": {"female": 6, "other": 10}, "dev": {"female": 3, "other": 5}}  # voices per split
SPEAKERS_PER_VOICE = 2
# what a sentence adds to the description, and how often
EXTRAS = (("plain", 0.45), ("frame", 0.15), ("context", 0.20), ("background", 0.10), ("comment", 0.10))


@dataclass(frozen=True)
class CorpusConfig:
    lang: str = "kannada"
    seed: int = 0
    num_align: int = 800
    num_train: int = 300
    num_dev: int = 80
    num_test: int = 160
    num_pretrain: int = 0  # untranscribed pool for self-supervised pretraining (its own speakers and sentences)
    version: int = CORPUS_VERSION

    def sizes(self) -> dict[str, int]:
        sizes = {"align": self.num_align, "train": self.num_train, "dev": self.num_dev, "test": self.num_test,
                 "pretrain": self.num_pretrain}
        return {k: v for k, v in sizes.items() if v}


# ------------------------------------------------------------------------------------------- sentences
def _form(forms: tuple[str, ...], gender: str, plural: bool) -> str:
    return forms[(2 if gender == "f" else 0) + int(plural)]


def group_phrase(lang: Language, group) -> str:
    count, size, colour, shape = group
    sg, pl, gender = lang.shapes[shape]
    words = [lang.numbers[count - 1]]
    if size:
        words.append(_form(lang.sizes[size], gender, count > 1))
    words += [_form(lang.colours[colour], gender, count > 1), pl if count > 1 else sg]
    return " ".join(words)


def describe(lang: Language, scene: dict, extra: dict | None = None) -> str:
    """The sentence for ``scene`` with ``extra`` (see :data:`EXTRAS`), NFC-normalised."""
    groups, layout = scene["groups"], scene.get("layout", "free")
    phrases = [group_phrase(lang, g) for g in groups]
    if layout == "middle":
        desc = f"{lang.positions['middle']} {phrases[0]}"
    elif layout in ("left-right", "top-bottom"):
        first, second = layout.split("-")
        desc = f"{lang.positions[first]} {phrases[0]} {lang.positions[second]} {phrases[1]}"
    else:
        desc = f" {lang.conj} ".join(phrases)
    extra = extra or {"kind": "plain"}
    copula = lang.copula[len(groups) > 1 or groups[0][0] > 1]
    kind = extra["kind"]
    if kind == "frame":
        text = f"{lang.in_picture} {desc} {copula}"
    elif kind == "context":
        lead = lang.context.format(name=extra["name"], verb=extra["verb"], when=extra.get("when") or "")
        text = f"{lead} {desc} {copula}"
    elif kind == "background":
        colour = _form(lang.colours[BACKGROUNDS[scene["bg"]][0]], lang.background_gender, False)
        text = f"{lang.background.format(colour=colour)} {desc} {copula}"
    elif kind == "comment":
        text = f"{desc} {extra['comment']}"
    else:
        text = desc
    return nfc(" ".join(text.split()))


# ------------------------------------------------------------------------------------------------ draws
def is_reserved(scene: dict) -> bool:
    """Whether a scene type (its groups and layout) belongs to the pretraining pool (a fixed hash)."""
    key = json.dumps([[list(g) for g in scene["groups"]], scene.get("layout", "free")]).encode()
    return int(hashlib.sha256(key).hexdigest()[:8], 16) % RESERVED_EVERY == 0


def _pick(rng, options):
    return options[int(rng.integers(len(options)))]


def _weighted(rng, pairs):
    names, weights = zip(*pairs)
    return names[int(rng.choice(len(names), p=[w / sum(weights) for w in weights]))]


def draw_scene(rng, index: int, pool: bool = False) -> dict:
    """One or two groups (the second differs in colour, shape or size), a layout and a background; drawn
    again until the scene type falls in the pool's share (``pool``) or outside it."""
    colours = list(COLOURS_RGB)

    def group(counts):
        count = int(rng.choice(len(counts), p=counts)) + 1
        size = _weighted(rng, ((None, 0.6), ("big", 0.2), ("small", 0.2)))
        return [count, size, _pick(rng, colours), _pick(rng, SHAPES)]

    while True:
        groups = [group((0.25, 0.25, 0.2, 0.15, 0.1, 0.05))]
        if rng.random() < 0.25:
            second = group((0.5, 0.3, 0.2))
            while second[1:] == groups[0][1:]:
                second = group((0.5, 0.3, 0.2))
            groups.append(second)
            layout = _weighted(rng, (("left-right", 0.4), ("top-bottom", 0.3), ("free", 0.3)))
        else:
            layout = "middle" if rng.random() < 0.2 else "free"
        backgrounds = [k for k, (name, _) in enumerate(BACKGROUNDS) if name not in {g[2] for g in groups}]
        scene = dict(index=index, groups=groups, layout=layout, bg=_pick(rng, backgrounds))  # never its objects' colour
        if is_reserved(scene) == pool:
            return scene


def draw_extra(rng, lang: Language) -> dict:
    kind = _weighted(rng, EXTRAS)
    if kind == "context":
        when = _weighted(rng, (("", 0.5), ("time", 0.25), ("place", 0.25)))
        return {"kind": kind, "name": _pick(rng, lang.names), "verb": _pick(rng, lang.verbs),
                "when": "" if not when else _pick(rng, lang.times if when == "time" else lang.places)}
    if kind == "comment":
        return {"kind": kind, "comment": _pick(rng, lang.comments)}
    return {"kind": kind}


# ------------------------------------------------------------------------------------------------ speakers
def voice_pools(shipped: dict[str, str]) -> dict[str, list[str]]:
    return {"female": [v for v in FEMALE_VOICES if v in shipped], "other": [v for v in OTHER_VOICES if v in shipped]}


def speakers(lang: Language, rng) -> dict[str, list[dict]]:
    """Speakers per split; dev and test get voices of their own (:data:`HELD_OUT`). A speaker is a voice
    with its rate, pitch and pitch range; ``group`` is its voice, the unit a bootstrap resamples."""
    from avasr_cli.data import tts

    shipped = tts.list_variants()
    voices: dict[str, list[str]] = {"train": [], "dev": [], "test": []}
    for kind, pool in voice_pools(shipped).items():
        pool = [pool[i] for i in rng.permutation(len(pool))]
        for split, n in HELD_OUT.items():
            voices[split] += [pool.pop(0) for _ in range(min(n[kind], len(pool) - 1))]
        voices["train"] += pool

    def speaker(v: str, tag: str) -> dict:
        return dict(id=f"{lang.code}-{v}-{tag}", voice=f"{lang.code}+{v}", group=f"{lang.code}+{v}",
                    gender=shipped[v], rate=int(rng.integers(185, 246)), pitch=int(rng.integers(30, 71)),
                    range=int(rng.integers(25, 86)))

    out = {split: [speaker(v, str(k)) for v in sorted(vs) for k in range(SPEAKERS_PER_VOICE)]
           for split, vs in voices.items()}
    out["align"] = out["train"]
    # the pool's speakers: train voices (dev/test voices are never heard before evaluation) with their own
    # rate and pitch, so no pool speaker is an align/train/dev/test speaker
    out["pretrain"] = [speaker(v, f"pool{k}") for v in sorted(voices["train"]) for k in range(SPEAKERS_PER_VOICE)]
    return out


# ------------------------------------------------------------------------------------------------ plan
SPLIT_CODES = {"align": 0, "train": 1, "dev": 2, "test": 3, "pretrain": 4}
SENTENCE_EVERY = 10  # one sentence in ten (by hash) may be said in dev/test, the other nine in train/align


def held_out_sentence(text: str) -> bool:
    """Whether a sentence belongs to the evaluation share (dev/test) of all sentences: a fixed hash, so
    dev/test and train/align can never share a sentence, with no sentence list kept in memory."""
    return int(hashlib.sha256(text.encode("utf-8")).hexdigest()[:8], 16) % SENTENCE_EVERY == 0


def align_scene(i: int, n: int) -> int:
    """Scene of alignment utterance ``i`` of ``n``: each scene is described twice, the two descriptions
    apart in the manifest (an affine permutation of the utterances: no table of ``n`` entries)."""
    step = 7919 if n % 7919 else 104729  # coprime with n (both are primes)
    return ((step * i + 13) % n) // 2


def iter_plan(cfg: CorpusConfig):
    """Every utterance in manifest order as a plain dict (speaker, text, scene, extra, seed): cheap,
    deterministic, no audio, one at a time (each utterance and scene is drawn from a generator seeded by
    its own position, so a million-clip corpus is planned in constant memory)."""
    import numpy as np

    lang = LANGUAGES[cfg.lang]
    spk = speakers(lang, np.random.default_rng([cfg.seed, 1]))
    offset = 0
    for split, n in cfg.sizes().items():
        code, pool, evaluation = SPLIT_CODES[split], split == "pretrain", split in ("dev", "test")
        for i in range(n):
            rng = np.random.default_rng([cfg.seed, 2, code, i])
            s = align_scene(i, n) if split == "align" else i
            scene = draw_scene(np.random.default_rng([cfg.seed, 5, code, s]), offset + s, pool)
            extra = draw_extra(rng, lang)
            text = describe(lang, scene, extra)
            while held_out_sentence(text) != evaluation:  # train/align never say a dev/test sentence
                if split != "align":  # an align scene is shared by two utterances: keep it, vary the words
                    scene = draw_scene(rng, offset + s, pool)
                extra = draw_extra(rng, lang)
                text = describe(lang, scene, extra)
            speaker = spk[split][int(rng.integers(len(spk[split])))]
            yield dict(utt_id=f"{lang.code}-{split}-{i:05d}", split=split, index=offset + i, speaker=speaker,
                       scene=scene, extra=extra, text=text, seed=cfg.seed)
        offset += n


def plan(cfg: CorpusConfig) -> list[dict]:
    return list(iter_plan(cfg))


__all__ = ["CORPUS_VERSION", "CorpusConfig", "describe", "iter_plan", "plan", "is_reserved", "held_out_sentence", "speakers"]
