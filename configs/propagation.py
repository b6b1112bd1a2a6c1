"""Label-propagation presets shared by every benchmark config and by evaluation during training."""

import ml_collections


def presets() -> ml_collections.ConfigDict:
    """The two label-propagation protocols (docs/method.md); every number is a field."""
    presets = ml_collections.ConfigDict()
    presets.mer = ml_collections.ConfigDict(
        dict(
            context="mer",
            radius=14,
            window="square",
            temperature=1.0,
            topk=0,
            normalize=False,
            long_term=(0, 5, 10),
            short_term=3,
            short_term_search=8,
            short_term_blur=2.0,
            crw_context=20,
            compactness=True,
            compactness_topk=2,
            compactness_sigma=1.0,
            compactness_min_prob=0.1,
            foreground_scale=1.15,
            tile=8,
        )
    )
    presets.crw = ml_collections.ConfigDict(
        dict(
            context="crw", radius=12, window="disk", temperature=0.05, topk=10, normalize=True,
            long_term=(0, 5, 10), short_term=3, short_term_search=8, short_term_blur=2.0, crw_context=20,
            compactness=False, compactness_topk=2, compactness_sigma=1.0, compactness_min_prob=0.1,
            foreground_scale=1.0, tile=8,
        )
    )  # fmt: skip
    return presets
