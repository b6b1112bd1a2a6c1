"""TensorBoard + log metric writer with clu's `MetricWriter` interface, without TensorFlow.

clu's own writers (`clu.metric_writers`) import TensorFlow, which would double the install
and may grab GPU memory; this writer keeps the same methods (`write_scalars`, `write_images`,
`write_hparams`, `close`) and writes TensorBoard event files through tensorboardX.
Only process 0 writes events; every process logs.
"""

import os
from typing import Any, Mapping

import jax
from absl import logging
from tensorboardX import SummaryWriter


class MetricWriter:
    """Writes scalars to TensorBoard event files under `logdir` and to the log."""

    def __init__(self, logdir: str, *, just_logging: bool | None = None):
        if just_logging is None:
            just_logging = jax.process_index() > 0
        self._events = None if just_logging else SummaryWriter(logdir=os.fspath(logdir), flush_secs=10)

    def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
        logging.info("[%d] %s", step, ", ".join(f"{k}={float(v):.6g}" for k, v in sorted(scalars.items())))
        if self._events is not None:
            for key, value in scalars.items():
                self._events.add_scalar(key, float(value), global_step=step)

    def write_images(self, step: int, images: Mapping[str, Any]) -> None:
        """Writes {tag: uint8 RGB image [H, W, 3]} to TensorBoard (nothing to the log)."""
        if self._events is not None:
            for key, image in images.items():
                self._events.add_image(key, image, global_step=step, dataformats="HWC")

    def write_hparams(self, hparams: Mapping[str, Any]) -> None:
        logging.info("hparams: %s", dict(hparams))
        if self._events is not None:
            self._events.add_text("hparams", "\n".join(f"    {k}: {v}" for k, v in sorted(hparams.items())), 0)

    def close(self) -> None:
        if self._events is not None:
            self._events.close()
