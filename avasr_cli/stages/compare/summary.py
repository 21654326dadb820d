"""Summaries of ``avasr compare`` beside its main table: what each row's alignment stage reached, over its
seeds, and what the runs were made with (their recorded environments)."""

from __future__ import annotations

def _mean_sd(values: list) -> dict | None:
    from avasr_cli.stages.compare.stats import mean_std

    vals = [float(v) for v in values if v is not None]
    if not vals:
        return None
    mean, sd = mean_std(vals)
    return {"mean": mean, "sd": sd, "n": len(vals)}


def alignment_summary(groups, rows: list[dict]) -> list[dict]:
    """Per row with an align stage: what that stage reached (run.json's align result), over its seeds:
    held-out and training-pair audio→image R@1 before and after, R@5 after, the final loss against
    chance (ln of the contrastive batch; ln of the codebook for audio-only), and the verdicts."""
    import math

    out = []
    for g, row in zip(groups, rows):
        results = [r.align_result for r in g if r.align_result]
        if not results:
            continue
        audio = all(a.get("objective") == "audio-only" for a in results)

        def at(key, metric):
            return [(a.get(key) or {}).get(metric) for a in results]

        batch = results[0].get("effective_batch")
        codes = ((results[0].get("budget") or {}).get("ssl") or {}).get("num_codes")
        chance = math.log(codes) if audio and codes else (math.log(batch) if isinstance(batch, int) and batch > 1 else None)
        verdicts: dict[str, int] = {}
        for a in results:
            if a.get("verdict"):
                verdicts[a["verdict"]] = verdicts.get(a["verdict"], 0) + 1
        out.append({"label": row["label"], "runs": len(results), "objective": results[0].get("objective"),
                    "pairs": (results[0].get("budget") or {}).get("pairs"),
                    "heldout_r1_before": _mean_sd(at("recall_before", "a2i_r@1")),
                    "heldout_r1_after": _mean_sd(at("recall_after", "a2i_r@1")),
                    "heldout_r5_after": _mean_sd(at("recall_after", "a2i_r@5")),
                    "heldout_chance_r1": _mean_sd(at("recall_after", "chance_a2i_r@1")),
                    "train_r1_after": _mean_sd(at("train_recall_after", "a2i_r@1")),
                    "final_loss": _mean_sd([a.get("final_loss") for a in results]), "chance_loss": chance,
                    "verdicts": verdicts})
    return out


def provenance(runs) -> dict:
    """What the runs were made with, from their own records: avasr commits (and whether a checkout had
    uncommitted changes), stacks, machines, and when the first and last stage finished."""
    envs = [e for r in runs for e in (r.info.get("environment"), r.info.get("align_environment")) if isinstance(e, dict)]

    def values(key):
        return sorted({str(e.get(key)) for e in envs if e.get(key) is not None})

    finished = sorted(t for r in runs for t in r.finished if t)
    return {"runs": len(runs), "recorded": len(envs), "avasr": values("avasr"), "avasr_commit": values("avasr_commit"),
            "avasr_dirty": values("avasr_dirty"), "python": values("python"), "torch": values("torch"),
            "nemo_toolkit": values("nemo_toolkit"), "lightning": values("lightning"), "cpu": values("cpu"),
            "cpu_id": values("cpu_id"), "cpu_flags": values("cpu_flags"), "cpu_capability": values("cpu_capability"), "torch_threads": values("torch_threads"),
            "gpus": values("gpus"), "deterministic": values("deterministic"),
            "first_finished": finished[0] if finished else None, "last_finished": finished[-1] if finished else None}
