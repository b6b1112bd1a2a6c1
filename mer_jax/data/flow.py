"""Optical flow for flow fusion at inference: OpenCV's DIS flow, frame t to frame t - gap."""

import cv2
import numpy as np


def dis_flow(frames: np.ndarray, flow_gap: int = 1, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) -> np.ndarray:
    """Flow of every frame to the frame `flow_gap` earlier.

    For pixel x of frame t, flow[t, x] = (position of the same point in frame t - gap) - x, in
    pixels, (dx, dy): the convention of training (docs/method.md, 'Flow fusion'). A frame with no
    frame `gap` earlier (t < gap) gets the negated flow to frame min(t + gap, T - 1), the motion
    it would have had at constant velocity, so the first frame, the reference of every frame at
    evaluation, carries motion too; a single frame gets zero flow.

    Args:
      frames: [T, H, W, 3] uint8 RGB.
      flow_gap: frame gap.
      preset: OpenCV DIS preset.

    Returns:
      [T, H, W, 2] float32.
    """
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    dis = cv2.DISOpticalFlow_create(preset)
    flow = np.zeros((*frames.shape[:3], 2), np.float32)
    for t in range(len(frames)):
        source, sign = flow_source(t, flow_gap, len(frames))
        if source != t:
            flow[t] = sign * dis.calc(grey[t], grey[source], None)
    return flow


def flow_source(t: int, flow_gap: int, num_frames: int) -> tuple[int, float]:
    """(frame the flow of frame t points to, sign it is stored with): (t - gap, +1), or for
    t < gap (min(t + gap, T - 1), -1): the negated forward flow (t itself: zero flow)."""
    if t >= flow_gap:
        return t - flow_gap, 1.0
    return min(t + flow_gap, num_frames - 1), -1.0
