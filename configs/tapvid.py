"""Point tracking on TAP-Vid (query-first): Average Jaccard, position and occlusion accuracy.

  python -m mer_jax.evaluate --config=configs/tapvid.py --config.tapvid_path=PATH/tapvid_davis.pkl \
      --config.checkpoint=DIR

`tapvid_path` takes tapvid_davis.pkl or the folder of TAP-Vid-Kinetics pickles; procedural videos
in the same format: `python -m data_prep.synthetic_tapvid --output=PKL`. `fields()` is the
benchmark's own section, also `config.evals.tapvid` during training (`propagation.training_eval`).
"""

import ml_collections
from ml_collections import config_dict

from configs import propagation

# The windowed CRW protocol: with the whole query frame searched (`crw`), a one-cell point label
# jumps to look-alike cells anywhere in it (docs/decisions.md, 'TAP-Vid').
PRESET = "crw_windowed"


def fields() -> ml_collections.ConfigDict:
    """The TAP-Vid benchmark's own fields (`benchmarks/tapvid/evaluator.py`)."""
    fields = propagation.video_selection()
    fields.tapvid_path = config_dict.placeholder(str)  # A TAP-Vid pickle, or a folder of them.
    fields.tapvid_size = 256  # Frames are resized to this square side, as the protocol does.
    fields.tapvid_sigma = 0.5  # Gaussian sigma (feature cells) of the query points' heatmaps.
    fields.tapvid_topk = 3  # A position is decoded from its heatmap's topk largest values.
    # Predicted occluded where the cosine similarity of a point's features at its query and at its
    # predicted position falls below this.
    fields.tapvid_occlusion_threshold = 0.5
    return fields


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = propagation.benchmark_config("tapvid", PRESET, fields())
    if arg:
        raise ValueError(f"unknown variant {arg!r}; use configs/tapvid.py")
    return config
