"""Tiny benchmark trees in the official layouts, built from procedural videos, for tests."""

import json
import os

import cv2
import numpy as np
import scipy.io

from mer_jax.data import synthetic_video
from mer_jax.evaluation import masks_io


def write_jpeg(path, rgb):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])


def videos(num, num_frames=8, height=48, width=64, seed=5):
    return synthetic_video.generate_videos(
        seed, num, num_frames=num_frames, height=height, width=width, num_objects=2, lighting=False
    )


def davis_tree(root, num_sequences=2, num_frames=8, height=48, width=64):
    """DAVIS/{JPEGImages,Annotations}/480p/<seq>/ and ImageSets/2017/val.txt; returns the videos.

    The last sequence is static (every frame and mask equals the first), so propagation must
    reproduce its masks almost exactly.
    """
    clips = videos(num_sequences, num_frames, height, width)
    last = clips[-1]
    clips[-1] = last._replace(
        frames=np.repeat(last.frames[:1], num_frames, 0), masks=np.repeat(last.masks[:1], num_frames, 0)
    )
    names = [f"seq{i}" for i in range(num_sequences)]
    for name, clip in zip(names, clips):
        for t in range(num_frames):
            write_jpeg(os.path.join(root, "JPEGImages", "480p", name, f"{t:05d}.jpg"), clip.frames[t])
            masks_io.write_mask(os.path.join(root, "Annotations", "480p", name, f"{t:05d}.png"), clip.masks[t])
    os.makedirs(os.path.join(root, "ImageSets", "2017"), exist_ok=True)
    with open(os.path.join(root, "ImageSets", "2017", "val.txt"), "w") as f:
        f.write("\n".join(names) + "\n")
    return dict(zip(names, clips))


def ytvos_tree(root, num_frames=8, height=48, width=64, late_frame=3, num_videos=1):
    """valid/{JPEGImages,Annotations}/vid<i> + meta.json, i < num_videos; in each, object 2 is first
    annotated at late_frame. Returns vid0's clip and frame names."""
    clips = videos(num_videos, num_frames, height, width, seed=9)
    frames = [f"{5 * t:05d}" for t in range(num_frames)]
    meta = {"videos": {}}
    for i, clip in enumerate(clips):
        name = f"vid{i}"
        for t, frame in enumerate(frames):
            write_jpeg(os.path.join(root, "JPEGImages", name, frame + ".jpg"), clip.frames[t])
        first = np.where(clip.masks[0] == 1, 1, 0).astype(np.uint8)
        late = np.where(clip.masks[late_frame] == 2, 2, 0).astype(np.uint8)
        masks_io.write_mask(os.path.join(root, "Annotations", name, frames[0] + ".png"), first)
        masks_io.write_mask(os.path.join(root, "Annotations", name, frames[late_frame] + ".png"), late)
        meta["videos"][name] = {
            "objects": {
                "1": {"category": "a", "frames": frames},
                "2": {"category": "b", "frames": frames[late_frame:]},
            }
        }
    with open(os.path.join(root, "meta.json"), "w") as f:
        json.dump(meta, f)
    return clips[0], frames


def jhmdb_tree(root, num_frames=6, height=48, width=64, num_test_videos=1):
    """Rename_Images, joint_positions and splits for static test videos v0..v<n-1> (frames and
    joints constant; joints spread over the frame) and one train video; returns v0's clip and joints."""
    clips = videos(num_test_videos, num_frames, height, width, seed=3)
    rng = np.random.default_rng(0)
    for i, clip in enumerate(clips):
        frames = np.repeat(clip.frames[:1], num_frames, 0)
        spread = rng.uniform([4, 4], [width - 5, height - 5], size=(1, 15, 2)).astype(np.float32)
        joints = np.repeat(spread, num_frames, 0)
        video_dir = os.path.join(root, "Rename_Images", "walk", f"v{i}")
        os.makedirs(video_dir, exist_ok=True)
        for t in range(num_frames):
            cv2.imwrite(os.path.join(video_dir, f"{t + 1:05d}.png"), cv2.cvtColor(frames[t], cv2.COLOR_RGB2BGR))
        mat_dir = os.path.join(root, "joint_positions", "walk", f"v{i}")
        os.makedirs(mat_dir, exist_ok=True)
        scipy.io.savemat(os.path.join(mat_dir, "joint_positions.mat"), {"pos_img": (joints + 1).transpose(2, 1, 0)})
        if i == 0:
            first = clip._replace(frames=frames), joints
    os.makedirs(os.path.join(root, "splits"), exist_ok=True)
    with open(os.path.join(root, "splits", "walk_test_split1.txt"), "w") as f:
        f.write("".join(f"v{i}.avi 2\n" for i in range(num_test_videos)) + f"v{num_test_videos}.avi 1\n")
    return first
