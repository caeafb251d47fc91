"""Join datasets of one env into a new Minari dataset (D4RL's medium-expert: medium, then
expert), every episode kept in order, with the provenance of each source."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from rllib_diffusion.collect.collect import PROVENANCE_KEY, episode_stats
from rllib_diffusion.data import Episode, EpisodeDataset, load_dataset, write_minari
from rllib_diffusion.data.errors import DatasetError
from rllib_diffusion.data.minari_io import check_output_id, read_extra_metadata
from rllib_diffusion.modules.model_config import ConfigError


@dataclass(frozen=True)
class ConcatSettings:
    """Settings of ``rllib-diffusion concat-datasets``.

    Attributes:
        sources: the datasets to join, in this order (Minari ids or paths, anything
            dataset-info reads), e.g. a medium and an expert set for medium-expert
        dataset_id: Minari id to write, e.g. rllib-diffusion/hopper/medium-expert-v0
            (stored under $MINARI_DATASETS_PATH, default ~/.minari/datasets)
        overwrite: replace an existing dataset id
        json: also write the summary to this JSON file
    """

    sources: tuple[str, ...]
    dataset_id: str
    overwrite: bool = False
    json: str | None = None


def _check_compatible(first: EpisodeDataset, other: EpisodeDataset) -> None:
    """One-line ``DatasetError`` unless ``other`` comes from the same env with the same
    observation and action sizes as ``first``."""
    if first.env_id != other.env_id:
        raise DatasetError(
            f"cannot join '{first.name}' ({first.env_id}) and '{other.name}' "
            f"({other.env_id}): the sources must come from one env."
        )
    if (first.obs_dim, first.action_dim) != (other.obs_dim, other.action_dim):
        raise DatasetError(
            f"cannot join '{first.name}' (obs {first.obs_dim}, action {first.action_dim}) "
            f"and '{other.name}' (obs {other.obs_dim}, action {other.action_dim})."
        )


def _source_provenance(source: str) -> Any:
    """What a source was made from (its own collection provenance), where it has one."""
    try:
        return read_extra_metadata(source, PROVENANCE_KEY)
    except DatasetError:  # not a Minari dataset (npz, hdf5): no metadata.json
        return None


def _join(
    sources: tuple[str, ...], loaded: list[EpisodeDataset]
) -> tuple[list[Episode], list[dict[str, Any]]]:
    """All episodes in source order, and one record per source (where its episodes start)."""
    episodes: list[Episode] = []
    records: list[dict[str, Any]] = []
    for source, ds in zip(sources, loaded):
        records.append(
            {
                "source": source,
                "name": ds.name,
                "first_episode": len(episodes),
                **episode_stats(ds.episodes),
                "provenance": _source_provenance(source),
            }
        )
        episodes.extend(ds.episodes)
    return episodes, records


def concat_datasets(settings: ConcatSettings) -> dict[str, Any]:
    """Write ``settings.sources`` one after the other as ``settings.dataset_id``.

    Reference scores come from the first source that has them. The output's metadata
    lists every source (name, first episode index in the output, size, return and its own
    provenance). Refused in one line, before anything is loaded where possible: fewer
    than two sources, an existing output id, sources of different envs or sizes.
    """
    if len(settings.sources) < 2:
        raise ConfigError(
            f"--sources needs at least two datasets to join, got {list(settings.sources)}."
        )
    check_output_id(settings.dataset_id, overwrite=settings.overwrite)
    t0 = time.perf_counter()
    loaded = [load_dataset(source) for source in settings.sources]
    for other in loaded[1:]:
        _check_compatible(loaded[0], other)
    episodes, sources = _join(settings.sources, loaded)
    ref_min = next((d.ref_min_score for d in loaded if d.ref_min_score is not None), None)
    ref_max = next((d.ref_max_score for d in loaded if d.ref_max_score is not None), None)
    out = EpisodeDataset(episodes, loaded[0].env_id, settings.dataset_id, ref_min, ref_max)
    names = " + ".join(ds.name for ds in loaded)
    path = write_minari(
        out,
        settings.dataset_id,
        algorithm_name=f"concatenation of {names}",
        author="rllib-diffusion concat-datasets",
        description=f"{len(episodes)} episodes of {out.env_id}: {names}, in this order.",
        overwrite=settings.overwrite,
        extra_metadata={PROVENANCE_KEY: {"kind": "concat", "sources": sources}},
    )
    summary = {
        "dataset_id": settings.dataset_id,
        "path": path,
        "env_id": out.env_id,
        "sources": [{k: v for k, v in s.items() if k != "provenance"} for s in sources],
        **episode_stats(episodes),
        "ref_min_score": ref_min,
        "ref_max_score": ref_max,
        "seconds": time.perf_counter() - t0,
    }
    if ref_min is not None and ref_max is not None:
        scores = out.normalized_score(out.episode_returns())
        summary["normalized_score_mean"] = float(scores.mean())
    print(
        f"[concat] wrote {settings.dataset_id}: {summary['episodes']} episodes, "
        f"{summary['transitions']} transitions from {names} -> {path}",
        flush=True,
    )
    return summary
