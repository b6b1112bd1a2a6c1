"""Point tracking on TAP-Vid (query-first): Average Jaccard, position and occlusion accuracy.

  python -m mer_jax.evaluate --config=configs/tapvid.py --config.tapvid_path=PATH/tapvid_davis.pkl \
      --config.checkpoint=DIR

`tapvid_path` takes tapvid_davis.pkl or the folder of TAP-Vid-Kinetics pickles; procedural videos
in the same format: `python -m data_prep.synthetic_tapvid --output=PKL`.
"""

import ml_collections
from ml_collections import config_dict

from configs import propagation


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = propagation.benchmark_config("tapvid")
    # The windowed CRW protocol: with the whole query frame searched (`crw`), a one-cell point
    # label jumps to look-alike cells anywhere in it (docs/decisions.md, 'TAP-Vid').
    config.preset = "crw_windowed"
    config.tapvid_path = config_dict.placeholder(str)  # A TAP-Vid pickle, or a folder of them.
    config.tapvid_size = 256  # Frames are resized to this square side, as the protocol does.
    config.tapvid_sigma = 0.5  # Gaussian sigma (feature cells) of the query points' heatmaps.
    config.tapvid_topk = 3  # A position is decoded from its heatmap's topk largest values.
    # Predicted occluded where the cosine similarity of a point's features at its query and at its
    # predicted position falls below this.
    config.tapvid_occlusion_threshold = 0.5
    if arg:
        raise ValueError(f"unknown variant {arg!r}; use configs/tapvid.py")
    return config
