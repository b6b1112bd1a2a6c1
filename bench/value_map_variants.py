"""How well value maps of other windows and betas find the moving objects, on trained features.

  python bench/value_map_variants.py --workdirs=RUN[,RUN...] [--windows=1,2,4,8] [--betas=0.6,1.0] --json=OUT.json

For each training workdir (its latest checkpoint and config) it runs the objective's stages once
on the run's diagnostics probe (`diagnostics.make_probe`, eval mode, as `diagnostics.compute`),
then scores `ven.window_value_map` of the encoder's target and reference features for every
window (in feature pixels) and beta as `diagnostics.value_map_auc` does: the exact ROC AUC of P
against the target's object cells. Rows also give the run's own value map (`model`, with its
config's window, beta and grid), 1 - cos(t, r) at each cell (the pixel-level change, no windows)
and the input flow's speed at each cell (an upper bound: the probe's objects move faster than the
background). It prints a table (rows: maps; columns: runs) and writes {run: {map: AUC}}.
"""

import argparse
import json
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def variant_aucs(
    target: np.ndarray, refs: np.ndarray, flow: np.ndarray, cells: np.ndarray, windows: list[int], betas: list[float]
) -> dict[str, float]:
    """AUCs of value maps and of the two references maps against `cells`.

    Args:
      target: [P, h, w, D] target features; refs: [P, R, h, w, D] reference features.
      flow: [P, H, W, 2] the target's input flow (H = 4 h, W = 4 w).
      cells: [P, h, w] bool, the target's object cells.
      windows, betas: the value maps' windows (feature pixels) and betas.
    """
    import jax.numpy as jnp

    from mer_jax import diagnostics, feature_maps
    from mer_jax.models import ven

    cells = jnp.asarray(cells)

    def auc(scores) -> float:
        return float(diagnostics.roc_auc(jnp.asarray(scores, jnp.float32), cells))

    found = {}
    for window in windows:
        for beta in betas:
            found[f"window {window}, beta {beta}"] = auc(ven.window_value_map(target, refs, window, beta))
    t, r = feature_maps.l2_normalize(jnp.asarray(target)), feature_maps.l2_normalize(jnp.asarray(refs))
    found["1 - cos(t, r) per cell"] = auc(1 - jnp.einsum("phwc,prhwc->prhw", t, r).mean(axis=1))
    h, w = cells.shape[1:]
    speed = np.hypot(flow[..., 0], flow[..., 1])[:, :: flow.shape[1] // h, :: flow.shape[2] // w][:, :h, :w]
    found["flow speed per cell (bound)"] = auc(speed)
    return found


def run_workdir(workdir: str, windows: list[int], betas: list[float]) -> dict[str, float]:
    """`variant_aucs` of one training workdir's latest checkpoint on its probe, and its own map."""
    import jax.numpy as jnp

    from mer_jax import color, diagnostics, export, objective, train_state

    variables, config, step = export.restore_variables(workdir)
    model, _, _ = train_state.make_initializer(config, 1)
    obj = objective.from_config(config, model, config.num_train_steps)
    probe = diagnostics.make_probe(config)
    clean = color.uint8_rgb_to_normalized_lab(probe.frames, obj.lab_mean, obj.lab_std)
    flow = probe.flow if config.model.use_flow else None
    stages = obj.stages(variables, clean, clean, flow, jnp.int32(step))
    features = np.asarray(stages.out.features)
    found = {}
    if stages.intermediates.value_map is not None:
        own = jnp.asarray(probe.object_cells)
        found["model"] = float(diagnostics.roc_auc(stages.intermediates.value_map, own))
    found.update(variant_aucs(features[:, -1], features[:, :-1], probe.flow[:, -1], probe.object_cells, windows, betas))
    found["object cell fraction"] = float(np.mean(probe.object_cells))
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdirs", required=True, help="comma-separated training workdirs")
    parser.add_argument("--windows", default="1,2,4,8")
    parser.add_argument("--betas", default="0.6,1.0")
    parser.add_argument("--json", required=True)
    args = parser.parse_args()
    sys.path.insert(0, REPO)
    windows = [int(w) for w in args.windows.split(",")]
    betas = [float(b) for b in args.betas.split(",")]
    results = {path: run_workdir(path, windows, betas) for path in args.workdirs.split(",")}
    names = list(dict.fromkeys(key for found in results.values() for key in found))
    runs = list(results)
    labels = [os.path.join(*os.path.normpath(r).split(os.sep)[-2:]) for r in runs]  # <row>/seed_<k>
    print(f"{'map':32s}" + "".join(f"{label:>22s}" for label in labels))
    for name in names:
        print(f"{name:32s}" + "".join(f"{results[r].get(name, float('nan')):22.3f}" for r in runs))
    with open(args.json, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
