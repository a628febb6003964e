"""The generate stage as an Apache Beam pipeline, on any Beam runner (DirectRunner on one
machine; DataflowRunner, FlinkRunner, SparkRunner, ... on a cluster):

    relicv2-saliency --config=... --stage=generate --beam_runner=DirectRunner \\
        --beam_options="--direct_num_workers=2 --direct_running_mode=multi_processing"

One element is one shard, the unit `--num_workers` splits by hand:
  launcher  list every split (`generate.list_image_folder`), keep the shards not written yet
            (`generate.pending_shards`: a rerun resumes), one element (split, shard) each
  Reshuffle -> ParDo(WriteShards)  the mask source loaded once per worker (`DoFn.setup`), the
            shard's images in batches of `generate.batch_size` through `generate.write_shard`
            (the plain path's batches, encoding and atomic write)
so every shard file is the plain generator's, byte for byte (tests/test_saliency_beam.py), and
no image bytes cross a shuffle. Workers list a split themselves (once each) instead of receiving
the list: ImageNet's 1.28 M paths would not fit in a Dataflow job graph; each checks that it
sees the launcher's list (a digest of it). Every path (`generate.data_root`,
`generate.output_dir`, `workdir` for the network source) must be readable by every worker:
local folders for the DirectRunner, gs://... on Dataflow (tf.io.gfile reads both).

Apache Beam is an optional requirement (requirements-beam.txt): only this module imports it,
and only `pipeline.run_generate_on_beam` imports this module.
"""

from __future__ import annotations

import hashlib
import os
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions

from relicv2_tf.saliency import generate


def pipeline_options(runner: str, beam_options) -> PipelineOptions:
    """Beam's PipelineOptions for `--runner=<runner>` and `beam_options` (Beam's own flags, e.g.
    ["--direct_num_workers=2"]). An option no Beam options class knows is an error here: Beam
    itself would log a warning and drop it."""
    beam_options = list(beam_options)
    if any(option.startswith("--runner") for option in beam_options):
        raise ValueError("give the runner as --beam_runner=<name>, not inside --beam_options.")
    options = PipelineOptions([f"--runner={runner}", *beam_options])
    unknown = sorted(set(options.get_all_options(retain_unknown_options=True))
                     - set(options.get_all_options()))
    if unknown:
        raise ValueError(f"--beam_options: {', '.join('--' + name for name in unknown)} is not a "
                         "Beam pipeline option (misspelt?); Beam's PipelineOptions classes and "
                         "the runner's documentation list them.")
    return options


def listing_digest(entries: list) -> str:
    """A digest of a split's list of images: every worker must see the launcher's."""
    return hashlib.sha256("\n".join(path for path, _, _ in entries).encode()).hexdigest()


def split_entries(config, split: str) -> list:
    """The images of `generate.data_root/<split>` the generate stage covers."""
    gen = config.generate
    return generate.evenly_spaced(
        generate.list_image_folder(os.path.join(gen.data_root, split)), gen.num_examples)


class WriteShards(beam.DoFn):
    """(split, shard index) -> the number of examples written to that shard's file."""

    def __init__(self, config, digests: dict):
        self._config = config
        self._digests = digests  # {split: listing_digest of the launcher's list}

    def setup(self):
        from relicv2_tf.saliency import pipeline

        self._predict_fn, self._image_size, _ = pipeline.mask_source(self._config)
        self._entries = {}

    def _entries_of(self, split: str) -> list:
        if split not in self._entries:
            entries = split_entries(self._config, split)
            if listing_digest(entries) != self._digests[split]:
                raise ValueError(
                    f"the images of {os.path.join(self._config.generate.data_root, split)} "
                    "changed while the pipeline ran (a worker lists other files than the "
                    "launcher did); rerun when the folder is complete: written shards are kept.")
            self._entries[split] = entries
        return self._entries[split]

    def process(self, element):
        split, shard = element
        gen = self._config.generate
        entries = self._entries_of(split)
        shard_entries = [entries[i] for i in generate.shard_indices(len(entries), gen.num_shards,
                                                                    shard)]
        path = generate.shard_path(gen.output_dir, split, shard, gen.num_shards)
        yield generate.write_shard(shard_entries, self._predict_fn, path, self._image_size,
                                   gen.batch_size)


def run(config, runner: str, beam_options=()) -> dict:
    """Writes every pending shard of `generate.splits` with a Beam pipeline on `runner`; returns
    the generate stage's summary (as `pipeline.run_generate`, plus the runner and the time)."""
    from relicv2_tf.saliency import pipeline

    pipeline.check_generate_config(config)
    gen = config.generate
    if gen.num_workers != 1 or gen.worker_index != 0:
        raise ValueError("generate.num_workers / generate.worker_index split the work by hand; "
                         "with --beam_runner the runner spreads the shards: leave them at 1 / 0.")
    options = pipeline_options(runner, beam_options)  # a mistake stops before any listing
    start = time.time()
    results, digests, elements = [], {}, []
    for split in gen.splits:
        entries = split_entries(config, split)
        todo = generate.pending_shards(entries, gen.output_dir, split, gen.num_shards,
                                       range(gen.num_shards))
        digests[split] = listing_digest(entries)
        elements += [(split, shard) for shard in todo]
        results.append({"root": os.path.join(gen.data_root, split),
                        "num_examples": len(entries), "num_shards": gen.num_shards,
                        "shards_skipped": gen.num_shards - len(todo),
                        "examples_written": sum(map(len, todo.values()))})
    if elements:
        with beam.Pipeline(options=options) as beam_pipeline:
            _ = (beam_pipeline
                 | "PendingShards" >> beam.Create(elements)
                 | "Spread" >> beam.Reshuffle()
                 | "WriteShards" >> beam.ParDo(WriteShards(config, digests)))
    summary = {"stage": "generate", "source": gen.source, "output_dir": gen.output_dir,
               "beam_runner": runner, "splits": results,
               "seconds": round(time.time() - start, 2)}
    figure = pipeline.save_generate_figure(config)
    if figure:
        summary["figure"] = figure
    return summary
