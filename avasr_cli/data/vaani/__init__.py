"""Vaani as a source of ``avasr prepare``: ``ARTPARK-IISc/Vaani`` (image-prompted audio, images in the
``images`` config) and ``ARTPARK-IISc/Vaani-transcription-part`` (transcribed train/validation/test),
from the hub or a local snapshot, decoded into a shared cache.

What the package offers: :func:`prepare_vaani` (the whole source, :mod:`.source`) and, for reading one
part on its own,

* :mod:`.hub` — dataset access: hub ids and local snapshots, configs and files, the gated-access check;
* :mod:`.select` — speakers, utterance ids, which configs and rows to read for ``--lang``/``--districts``;
* :mod:`.plan` — the plan printed before decoding, the large-job and free-space checks;
* :mod:`.shards` — resumable, parallel decoding in shards;
* :mod:`.images` — image names first, then only the needed images;
* :mod:`.build` — the phases and the rules that turn their rows into splits.
"""

from avasr_cli.data.vaani.source import (CACHE_VERSION, DEFAULT_DATASET, DEFAULT_TRANSCRIBED, UNKNOWN_SPEAKER,
                                         VaaniCorpus, VaaniDataset, corpus_key, parse_ref, prepare_vaani,
                                         select_configs, speaker_keys)

__all__ = ["CACHE_VERSION", "DEFAULT_DATASET", "DEFAULT_TRANSCRIBED", "UNKNOWN_SPEAKER", "VaaniCorpus",
           "VaaniDataset", "corpus_key", "parse_ref", "prepare_vaani", "select_configs", "speaker_keys"]
