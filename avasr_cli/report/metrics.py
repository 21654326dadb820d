"""WER and CER with jiwer, after the ``avasr-indic-v1`` normalisation (:mod:`avasr_cli.data.text`).

Rates are corpus-level: total errors over total reference words (characters), not a mean of
per-utterance rates. An utterance whose reference is empty after normalisation contributes no reference
words; each word of its hypothesis counts as an insertion. A rate over zero reference words is ``0.0``
when there are no errors and ``None`` otherwise (it is undefined; JSON has no infinity).

CER is computed over Unicode code points of the normalised (NFC) text with the single spaces between
words counted as characters (jiwer's default).
"""

from __future__ import annotations

import unicodedata
from collections import Counter

from avasr_cli.data.text import NORMALIZATION, normalize_for_scoring

TOP_CONFUSIONS = 20
UNKNOWN = "unknown"


def _rate(errors: int, total: int) -> float | None:
    if total > 0:
        return errors / total
    return 0.0 if errors == 0 else None


def _counts(alignment) -> dict[str, int]:
    c = {"hits": 0, "substitutions": 0, "insertions": 0, "deletions": 0}
    for chunk in alignment:
        n_ref = chunk.ref_end_idx - chunk.ref_start_idx
        if chunk.type == "equal":
            c["hits"] += n_ref
        elif chunk.type == "substitute":
            c["substitutions"] += n_ref
        elif chunk.type == "delete":
            c["deletions"] += n_ref
        elif chunk.type == "insert":
            c["insertions"] += chunk.hyp_end_idx - chunk.hyp_start_idx
    return c


def _process(refs: list[str], hyps: list[str], chars: bool):
    import jiwer

    return jiwer.process_characters(refs, hyps) if chars else jiwer.process_words(refs, hyps)


def score(
    refs: list[str],
    hyps: list[str],
    *,
    utt_ids: list[str],
    speakers: list[str] | None = None,
    extra: dict[str, list[str]] | None = None,
    lang: str | None = None,
    groups: list[str] | None = None,
) -> dict:
    """Score hypotheses against references (both normalised here); see the module docstring.

    ``groups``: each utterance's speaker group, the independent unit a bootstrap resamples (a voice of the
    built-in corpus; default: the speaker). ``speakers`` and each list in ``extra`` (e.g. ``{"gender": [...], "district": [...]}``) give one
    value per utterance and produce a breakdown; missing values are grouped as ``unknown``.
    """
    n = len(refs)
    lists = {"hyps": hyps, "utt_ids": utt_ids}
    if speakers is not None:
        lists["speakers"] = speakers
    if groups is not None:
        lists["groups"] = groups
    for key, values in (extra or {}).items():
        lists[f"extra[{key!r}]"] = values
    bad = [f"{name} has {len(v)}" for name, v in lists.items() if len(v) != n]
    if bad:
        raise ValueError(f"score(): refs has {n} items but " + ", ".join(bad))

    nrefs = [normalize_for_scoring(r or "", lang) for r in refs]
    nhyps = [normalize_for_scoring(h or "", lang) for h in hyps]
    spk = [str(s) if s not in (None, "") else UNKNOWN for s in speakers] if speakers is not None else [UNKNOWN] * n
    grp = [str(g) if g not in (None, "") else s for g, s in zip(groups, spk)] if groups is not None else spk

    utterances: list[dict] = []
    words_total = {"ref": 0, "hits": 0, "substitutions": 0, "insertions": 0, "deletions": 0}
    chars_total = dict(words_total)
    confusions: Counter = Counter()
    if n:
        wout = _process(nrefs, nhyps, chars=False)
        cout = _process(nrefs, nhyps, chars=True)
        for i in range(n):
            w = _counts(wout.alignments[i])
            c = _counts(cout.alignments[i])
            ref_words = len(wout.references[i])
            ref_chars = len(cout.references[i])
            for chunk in wout.alignments[i]:
                if chunk.type == "substitute":
                    r = wout.references[i][chunk.ref_start_idx:chunk.ref_end_idx]
                    h = wout.hypotheses[i][chunk.hyp_start_idx:chunk.hyp_end_idx]
                    confusions.update(zip(r, h))
            for total, counts, length in ((words_total, w, ref_words), (chars_total, c, ref_chars)):
                total["ref"] += length
                for k, v in counts.items():
                    total[k] += v
            utterances.append({
                "utt_id": str(utt_ids[i]),
                "speaker": spk[i],
                "group": grp[i],
                "ref": nrefs[i],
                "hyp": nhyps[i],
                "ref_words": ref_words,
                "word_errors": w["substitutions"] + w["insertions"] + w["deletions"],
                "sub": w["substitutions"],
                "ins": w["insertions"],
                "del": w["deletions"],
                "ref_chars": ref_chars,
                "char_errors": c["substitutions"] + c["insertions"] + c["deletions"],
            })

    def errors(t: dict) -> int:
        return t["substitutions"] + t["insertions"] + t["deletions"]

    breakdown: dict[str, dict] = {}
    keyed = ({"speaker": spk} if speakers is not None else {}) | {
        k: [str(v) if v not in (None, "") else UNKNOWN for v in vals] for k, vals in (extra or {}).items()
    }
    for key, values in keyed.items():
        acc: dict[str, list[int]] = {}
        for u, value in zip(utterances, values):
            a = acc.setdefault(value, [0, 0, 0, 0, 0])
            a[0] += u["word_errors"]
            a[1] += u["ref_words"]
            a[2] += u["char_errors"]
            a[3] += u["ref_chars"]
            a[4] += 1
        breakdown[key] = {
            value: {"wer": _rate(a[0], a[1]), "cer": _rate(a[2], a[3]), "num_utterances": a[4]}
            for value, a in sorted(acc.items())
        }

    top = sorted(confusions.items(), key=lambda kv: (-kv[1], kv[0]))[:TOP_CONFUSIONS]
    return {
        "normalization": NORMALIZATION,
        "num_utterances": n,
        "wer": _rate(errors(words_total), words_total["ref"]),
        "cer": _rate(errors(chars_total), chars_total["ref"]),
        "words": words_total,
        "chars": chars_total,
        "utterances": utterances,
        "breakdown": breakdown,
        "top_confusions": [[r, h, c] for (r, h), c in top],
    }


# ------------------------------------------------------------------------------------ errors file
def _width(s: str) -> int:
    """Terminal columns of ``s``: combining marks and format characters take none, wide chars two."""
    w = 0
    for ch in s:
        cat = unicodedata.category(ch)
        if cat in ("Mn", "Me", "Cf"):
            continue
        w += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return w


def _pad(s: str, width: int) -> str:
    return s + " " * (width - _width(s))


def align_lines(ref: str, hyp: str) -> tuple[str, str, str]:
    """REF / HYP / EVAL lines of a word alignment (``*`` fills a gap; EVAL marks S, I, D)."""
    import jiwer

    out = jiwer.process_words(ref, hyp)
    rw, hw = out.references[0], out.hypotheses[0]
    cols: list[tuple[str, str, str]] = []
    for chunk in out.alignments[0]:
        r = rw[chunk.ref_start_idx:chunk.ref_end_idx]
        h = hw[chunk.hyp_start_idx:chunk.hyp_end_idx]
        if chunk.type == "equal":
            cols += [(a, b, "") for a, b in zip(r, h)]
        elif chunk.type == "substitute":
            cols += [(a, b, "S") for a, b in zip(r, h)]
        elif chunk.type == "delete":
            cols += [(a, "*" * max(1, _width(a)), "D") for a in r]
        else:
            cols += [("*" * max(1, _width(b)), b, "I") for b in h]
    widths = [max(_width(a), _width(b), 1) for a, b, _ in cols]
    lines = tuple(" ".join(_pad(col[k], wd) for col, wd in zip(cols, widths)).rstrip() for k in range(3))
    return lines  # type: ignore[return-value]


def format_errors(result: dict) -> str:
    """A human-readable errors file: a summary, then every utterance (most word errors first) with its
    aligned REF / HYP / EVAL lines, then the top confusions."""

    def pct(x: float | None) -> str:
        return "n/a" if x is None else f"{100 * x:.2f}%"

    w, c = result["words"], result["chars"]
    lines = [
        f"# normalisation: {result.get('normalization', NORMALIZATION)}",
        f"# utterances: {result['num_utterances']}",
        f"# WER {pct(result['wer'])} ({w['substitutions'] + w['insertions'] + w['deletions']} errors / "
        f"{w['ref']} words: S={w['substitutions']} I={w['insertions']} D={w['deletions']})",
        f"# CER {pct(result['cer'])} ({c['substitutions'] + c['insertions'] + c['deletions']} errors / {c['ref']} chars)",
        "",
    ]
    order = sorted(result["utterances"], key=lambda u: (-u["word_errors"], -u["char_errors"], u["utt_id"]))
    for u in order:
        ref_line, hyp_line, eval_line = align_lines(u["ref"], u["hyp"])
        lines.append(
            f"{u['utt_id']} speaker={u['speaker']} word_errors={u['word_errors']}/{u['ref_words']} "
            f"(S={u['sub']} I={u['ins']} D={u['del']}) char_errors={u['char_errors']}/{u['ref_chars']}"
        )
        lines += [f"REF:  {ref_line}", f"HYP:  {hyp_line}", f"EVAL: {eval_line}".rstrip(), ""]
    if result.get("top_confusions"):
        lines.append("# top substitutions (ref -> hyp: count)")
        lines += [f"{r} -> {h}: {n}" for r, h, n in result["top_confusions"]]
    return "\n".join(lines).rstrip() + "\n"
