"""Optical flow for flow fusion at inference: OpenCV's DIS flow, frame t to frame t - gap."""

import cv2
import numpy as np


def dis_flow(frames: np.ndarray, flow_gap: int = 1, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) -> np.ndarray:
    """Flow of every frame to the frame `flow_gap` earlier (frame max(t - gap, 0); zero for t < gap).

    For pixel x of frame t, flow[t, x] = (position of the same point in frame t - gap) - x, in
    pixels, (dx, dy): the convention of training (docs/method.md, 'Flow fusion').

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
    for t in range(flow_gap, len(frames)):
        flow[t] = dis.calc(grey[t], grey[t - flow_gap], None)
    return flow
