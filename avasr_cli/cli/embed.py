"""``avasr embed-images``: embed the run's images into the shared feature store."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from avasr_cli.cli.common import ForceOption, GpusOption, JsonOption, NodesOption, RunDirOption, out, run_stage


def _yes_no(value: object, yes: str, no: str) -> str:
    return yes if value is True else no if value is False else "unknown"


def _summary(r: dict) -> str:
    tag = " [UNTRAINED]" if r.get("untrained") and "UNTRAINED" not in r["label"] else ""
    skipped = f", {r['skipped']} skipped (see features.json)" if r.get("skipped") else ""
    what = (f"{r.get('kind') or 'kind unknown'}; {_yes_no(r.get('pretrained'), 'pretrained', 'not pretrained')}, "
            f"{_yes_no(r.get('available_offline'), 'available offline', 'needed the network')}")
    return (f"{r['images']} images: {r['embedded']} embedded, {r['cached']} cached{skipped}\n"
            f"model {r['label']}{tag}, dim {r['dim']}, {r['num_patches']} patches, pooling {r['pooling']}\n"
            f"{what}\nstore {r['store']}")


def _print_registry(as_json: bool) -> None:
    import json

    from rich.table import Table

    from avasr_cli.vision.registry import registry_rows

    rows = registry_rows()
    if as_json:
        out.print_json(json.dumps(rows, ensure_ascii=False))
        return
    table = Table()
    table.add_column("name", no_wrap=True)
    for col in ("what it is", "pretrained", "text-aligned", "available offline"):
        table.add_column(col)
    table.add_column("details", overflow="fold")
    for row in rows:
        offline = ("yes (" + row["where"] + ")") if row["available_offline"] else "no: " + row["where"]
        table.add_row(row["name"], row["kind"], _yes_no(row["pretrained"], "pretrained", "UNTRAINED"),
                      _yes_no(row["text_aligned"], "yes", "no"), offline, f"{row['label']}; {row['model']}")
    out.print(table)


def embed_images(
    run_dir: RunDirOption = None,
    vision: Annotated[str, typer.Option(help="Registry name (see --list), hub id owner/name, or a local model directory. auto: efficientnet-lite0 (ImageNet-pretrained CNN, offline) for the built-in corpus, else siglip2.")] = "auto",
    revision: Annotated[Optional[str], typer.Option(help="Hub revision (branch, tag or commit) to pin.")] = None,
    batch_size: Annotated[int, typer.Option(help="Images per forward pass.")] = 32,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N or mps.")] = "auto",
    patch_pool: Annotated[int, typer.Option(help="Average-pool patch tokens to a K×K grid before storing (0 = keep all).")] = 0,
    trust_remote_code: Annotated[bool, typer.Option("--trust-remote-code", help="Allow a hub model's own Python code to run.")] = False,
    workers: Annotated[int, typer.Option(help="Image decoding worker processes (0 = decode in the main process).")] = 2,
    verify: Annotated[bool, typer.Option("--verify", help="Check every store shard against its checksums first (reads the whole store); damaged shards are removed and their images embedded again. Without it, sizes and headers are checked.")] = False,
    shard_images: Annotated[int, typer.Option(help="Images per committed store shard (what a killed run keeps; rounded up to whole batches).")] = 1024,
    gpus: GpusOption = 0,
    nodes: NodesOption = 1,
    cpu_procs: Annotated[int, typer.Option(help="With --gpus 0: CPU processes, each embedding its own part (mostly for testing).")] = 1,
    list_: Annotated[bool, typer.Option("--list", help="Print the encoder registry (what each is, pretrained, offline) and exit; with --json as JSON.")] = False,
    force: ForceOption = False,
    as_json: JsonOption = False,
) -> None:
    """Embed every image named in the run's manifests with a vision encoder into the shared feature store
    (fp16, resumable, cached by image content: a rerun embeds only new images).

    Examples:

        avasr embed-images                      # built-in corpus: efficientnet-lite0, offline

        avasr embed-images --vision siglip2

        avasr embed-images --vision /models/my-siglip --batch-size 64

        avasr embed-images --vision siglip2 --gpus 8   # each GPU embeds an eighth, into the one store

        avasr embed-images --list
    """
    if list_:
        _print_registry(as_json)
        raise typer.Exit()
    from avasr_cli.stages.embed_images import EmbedConfig, embed_inputs, run_embed_images

    cfg = EmbedConfig(vision=vision, revision=revision, batch_size=batch_size, device=device, patch_pool=patch_pool,
                      trust_remote_code=trust_remote_code, workers=workers, verify=verify, shard_images=shard_images,
                      gpus=gpus, nodes=nodes, cpu_procs=cpu_procs)
    cfg.validate()
    run_stage("embed-images", run_dir, cfg, run_embed_images, force=force, as_json=as_json, summary=_summary,
              inputs=embed_inputs)


def register(app: typer.Typer) -> None:
    app.command("embed-images")(embed_images)
