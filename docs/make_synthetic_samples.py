"""Sample pictures of the procedural generator kinds for docs/synthetic.md.

  python docs/make_synthetic_samples.py [--size=128] [--seed=4] [--out=docs/images]

Writes `<out>/synthetic_<kind>.png` for kind in ('easy', 'camouflage'): four frames of one video
(`synthetic_video.generate_video(seed, num_frames=20, height=size, width=size, kind=kind)`, frames
1, 7, 13, 19) side by side; below them the instance masks (background black, objects in fixed
colours); below those the flow magnitude to the previous frame (black 0 to white `FLOW_WHITE` px).
"""

import argparse
import os
import sys

import cv2
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mer_jax.data import synthetic_video  # noqa: E402

FRAMES = (1, 7, 13, 19)
FLOW_WHITE = 4.0  # px/frame shown as white (the fastest camouflage objects at 128 px).
MASK_COLOURS = np.array([[0, 0, 0], [230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200]], np.uint8)
GUTTER = 2  # White px between tiles.


def sample_sheet(kind: str, seed: int, size: int) -> np.ndarray:
    """Returns the sheet of one video as uint8 RGB [3 * size + 2 * GUTTER, 4 * size + 3 * GUTTER, 3]."""
    video = synthetic_video.generate_video(seed, num_frames=max(FRAMES) + 1, height=size, width=size, kind=kind)
    speed = np.hypot(video.flow[..., 0], video.flow[..., 1])
    grey = np.clip(np.rint(255.0 * speed / FLOW_WHITE), 0, 255).astype(np.uint8)
    rows = [
        [video.frames[t] for t in FRAMES],
        [MASK_COLOURS[video.masks[t] % len(MASK_COLOURS)] for t in FRAMES],
        [np.repeat(grey[t][..., None], 3, axis=-1) for t in FRAMES],
    ]
    white_column = np.full((size, GUTTER, 3), 255, np.uint8)
    lines = [np.concatenate([part for tile in row for part in (tile, white_column)][:-1], axis=1) for row in rows]
    white_row = np.full((GUTTER, lines[0].shape[1], 3), 255, np.uint8)
    return np.concatenate([part for line in lines for part in (line, white_row)][:-1], axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=128, help="frame side in px")
    parser.add_argument("--seed", type=int, default=4, help="video seed")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "images"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    for kind in ("easy", "camouflage"):
        path = os.path.join(args.out, f"synthetic_{kind}.png")
        sheet = sample_sheet(kind, args.seed, args.size)
        cv2.imwrite(path, cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
        print(f"{path}: {sheet.shape[1]}x{sheet.shape[0]}, {os.path.getsize(path) / 1024:.0f} KB")


if __name__ == "__main__":
    main()
