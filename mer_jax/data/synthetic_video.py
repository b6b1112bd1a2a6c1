"""Deterministic procedural videos with exact instance masks and optical flow.

This module owns the project's embedded default data (nothing is downloaded): layered scenes of a
slowly panning textured background and `num_objects` textured objects (ellipses, rounded
superellipses, star-shaped blobs) that translate along smooth paths, rotate and occlude each other
in a fixed depth order. Every layer is a texture image moved by an analytic rigid transform
T_t: canonical -> image coordinates, so frames are rendered by inverse warping (bilinear) and the
visible-instance masks and backward flow T_{t-g}(T_t^{-1}(x)) - x are exact. That makes the videos
usable for training, for held-out mask evaluation and as ground truth for flow estimators. All
surfaces draw their colours from one per-video palette; optional smooth lighting changes (global
gain plus a moving illumination gradient) deliberately break brightness constancy. Two kinds of
scene share the renderer (docs/synthetic.md): 'easy', small objects whose texture kind differs from
the background's, and 'camouflage', large objects textured as the background (another realisation
of the same texture) that only their motion sets apart.
"""

from typing import Callable, NamedTuple

import cv2
import numpy as np

from mer_jax.data import flow as flow_lib

_TEXTURE_KINDS = ("stripes", "blobs", "checker", "speckle")
_PALETTE_SIZE = 3
_TEXTURE_PAD = 4  # Margin (image px) so sampling never reads past a texture's content.
# Textures are stored supersampled, so rendering samples them almost exactly and frames stay
# consistent under sub-pixel motion: bilinear interpolation error shrinks with the square of this
# factor, and cv2.remap's rounding of sample positions to 1/32 texture px becomes 1/64 image px.
_TEXTURE_SCALE = 2
_CAMOUFLAGE_REFERENCE_SIDE = 128.0  # Frame side (px) at which camouflage objects move 2-4 px/frame.


class SyntheticVideo(NamedTuple):
    """One generated video.

    Attributes:
      frames: [T, H, W, 3] uint8 RGB.
      masks: [T, H, W] uint8 instance ids of the topmost visible layer: 0 background, 1..K objects
        (a larger id is nearer the camera).
      flow: [T, H, W, 2] float32 (dx, dy) in pixels: for pixel x of frame t, the position in frame
        t - flow_gap of the same surface point, minus x; for t < flow_gap, minus that displacement
        to frame min(t + flow_gap, T - 1) (`flow.flow_source`: the motion at constant velocity).
    """

    frames: np.ndarray
    masks: np.ndarray
    flow: np.ndarray


class Layer(NamedTuple):
    """One surface of a scene (`scene_layers`): its texture moved by the rigid transform
    T_t(c) = R(angles[t]) c + centres[t] from canonical to image (x, y) pixel coordinates."""

    texture: np.ndarray  # [h, w, 3] float32 RGB in [0, 255].
    origin: np.ndarray  # [2] texture (col, row) of canonical point (0, 0).
    angles: np.ndarray  # [T] rotation of the canonical frame, radians.
    centres: np.ndarray  # [T, 2] image (x, y) of canonical point (0, 0).
    radius: Callable[[np.ndarray], np.ndarray] | None  # Boundary radius per polar angle; None: fills the image.


class _TextureSpec(NamedTuple):
    """Parameters of a stationary random texture; every `_texture` call renders a new realisation of it."""

    kind: str  # One of _TEXTURE_KINDS.
    colours: np.ndarray  # [3, 3] RGB control colours of the pattern -> colour curve.
    theta: float  # Orientation (radians) of stripes and checker; 0 for the noise kinds.
    scale: float  # Period (stripes, checker) or blur sigma (blobs, speckle) in image px.


class _Scene(NamedTuple):
    """What every object of a video is sampled against."""

    times: np.ndarray  # [T] float64 frame indices.
    frame_size: np.ndarray  # [2] float64 (W, H).
    palette: np.ndarray  # [3, 3] the video's dark, mid and bright colours.
    background: _TextureSpec


def _texture_spec(rng: np.random.Generator, kind: str, palette: np.ndarray) -> _TextureSpec:
    """Draws the colours (a jittered permutation of the palette) and pattern scale of one texture."""
    colours = palette[rng.permutation(_PALETTE_SIZE)] + rng.normal(0.0, 6.0, palette.shape)
    if kind in ("stripes", "checker"):
        theta = rng.uniform(0.0, np.pi)
        period = rng.uniform(8.0, 16.0) if kind == "stripes" else rng.uniform(10.0, 18.0)
        return _TextureSpec(kind, colours, theta, period)
    return _TextureSpec(kind, colours, 0.0, rng.uniform(4.0, 8.0) if kind == "blobs" else rng.uniform(1.5, 2.0))


def _pattern(rng: np.random.Generator, spec: _TextureSpec, height: int, width: int) -> np.ndarray:
    """Returns a band-limited [height, width] float32 pattern in [0, 1] (random phase or noise)."""
    if spec.kind in ("stripes", "checker"):
        rows, cols = np.mgrid[0:height, 0:width].astype(np.float32) / _TEXTURE_SCALE
        frequency = 2.0 * np.pi / spec.scale
        along = (np.cos(spec.theta) * cols + np.sin(spec.theta) * rows) * frequency + rng.uniform(0.0, 2.0 * np.pi)
        if spec.kind == "stripes":
            return 0.5 + 0.5 * np.sin(along)
        across = (np.cos(spec.theta) * rows - np.sin(spec.theta) * cols) * frequency
        # A soft (tanh) checker: sharper than a plain product of sinusoids, still band-limited enough.
        return 0.5 + 0.5 * np.tanh(1.5 * np.sin(along) * np.sin(across)) / np.tanh(1.5)
    noise = cv2.GaussianBlur(
        rng.standard_normal((height, width)).astype(np.float32),
        (0, 0),
        _TEXTURE_SCALE * spec.scale,
        borderType=cv2.BORDER_REFLECT,
    )
    normalised = (noise - noise.mean()) / (noise.std() + 1e-6)
    return 0.5 + 0.5 * np.tanh(0.7 * normalised)


def _texture(rng: np.random.Generator, spec: _TextureSpec, height: int, width: int) -> np.ndarray:
    """Maps a new realisation of `spec`'s pattern smoothly through its colours: [height, width, 3] float32."""
    pattern = _pattern(rng, spec, height, width)[..., None]
    first, middle, last = spec.colours
    # Quadratic Bezier through the three colours: smooth in the pattern, so the texture stays band-limited.
    return ((1.0 - pattern) ** 2 * first + 2.0 * pattern * (1.0 - pattern) * middle + pattern**2 * last).astype(
        np.float32
    )


def _random_shape(
    rng: np.random.Generator, size: float, base_range: tuple[float, float]
) -> tuple[Callable[[np.ndarray], np.ndarray], float]:
    """Returns (boundary radius as a function of polar angle, bounding radius) of a star-shaped outline.

    Its base radius is drawn uniformly from `base_range` times `size`.
    """
    kind = rng.integers(3)
    base = rng.uniform(*base_range) * size
    if kind == 2:
        lobes, amplitude, phase = rng.integers(3, 7), rng.uniform(0.15, 0.35), rng.uniform(0.0, 2.0 * np.pi)
        return (lambda phi: base * (1.0 + amplitude * np.cos(lobes * phi + phase))), base * (1.0 + amplitude)
    semi_x, semi_y = base * rng.uniform(0.7, 1.3, 2)
    exponent = 2.0 if kind == 0 else rng.uniform(2.5, 5.0)  # Superellipses look like rounded rectangles.

    def radius(phi: np.ndarray) -> np.ndarray:
        return (np.abs(np.cos(phi) / semi_x) ** exponent + np.abs(np.sin(phi) / semi_y) ** exponent) ** (
            -1.0 / exponent
        )

    return radius, np.sqrt(2.0) * max(semi_x, semi_y)


def _sinusoid(
    rng: np.random.Generator, times: np.ndarray, amplitude: np.ndarray, omega: tuple[float, float]
) -> np.ndarray:
    """Returns amplitude * sin(omega * t + phase) with random omega and phase per column: [T, len(amplitude)]."""
    omegas = rng.uniform(*omega, amplitude.shape)
    return amplitude * np.sin(np.outer(times, omegas) + rng.uniform(0.0, 2.0 * np.pi, amplitude.shape))


def _sinusoidal_path(rng: np.random.Generator, scene: _Scene) -> np.ndarray:
    """Centres [T, 2] oscillating per axis around a point of the middle half (amplitude 0.05-0.25 of the frame)."""
    return rng.uniform(0.25, 0.75, 2) * scene.frame_size + _sinusoid(
        rng, scene.times, rng.uniform(0.05, 0.25, 2) * scene.frame_size, (0.05, 0.25)
    )


def _orbit_path(rng: np.random.Generator, scene: _Scene) -> np.ndarray:
    """Centres [T, 2] circling at a constant 2-4 px/frame per 128 px of frame side.

    The circle (radius 0.08-0.2 of the side, either direction) is centred in the middle half of the frame.
    """
    side = float(scene.frame_size.min())
    speed = rng.uniform(2.0, 4.0) * side / _CAMOUFLAGE_REFERENCE_SIDE
    radius = rng.uniform(0.08, 0.2) * side
    phases = rng.uniform(0.0, 2.0 * np.pi) + rng.choice([-1.0, 1.0]) * speed / radius * scene.times
    return rng.uniform(0.25, 0.75, 2) * scene.frame_size + radius * np.stack([np.cos(phases), np.sin(phases)], axis=1)


def _object_layer(
    rng: np.random.Generator,
    scene: _Scene,
    shape: tuple[Callable[[np.ndarray], np.ndarray], float],
    texture: _TextureSpec,
    path: Callable[[np.random.Generator, _Scene], np.ndarray],
) -> Layer:
    """Fills `shape` (radius function, bounding radius) with a new realisation of `texture`, moved along `path`
    and turning at a constant random rate (at most 0.06 rad/frame)."""
    radius, bound = shape
    extent = _TEXTURE_SCALE * (int(np.ceil(bound)) + _TEXTURE_PAD)
    image = _texture(rng, texture, 2 * extent + 1, 2 * extent + 1)
    centres = path(rng, scene)
    angles = rng.uniform(0.0, 2.0 * np.pi) + rng.uniform(-0.06, 0.06) * scene.times
    return Layer(image, np.full(2, float(extent)), angles, centres, radius)


def _easy_objects(rng: np.random.Generator, scene: _Scene, num_objects: int) -> list[Layer]:
    """Small objects (base radius 0.1-0.2 of the frame side) of other texture kinds than the background."""
    layers = []
    index = _TEXTURE_KINDS.index(scene.background.kind)
    for _ in range(num_objects):
        # Objects differ from the background in texture kind, never only in colour.
        kind = _TEXTURE_KINDS[(index + rng.integers(1, len(_TEXTURE_KINDS))) % len(_TEXTURE_KINDS)]
        shape = _random_shape(rng, float(scene.frame_size.min()), (0.1, 0.2))
        layers.append(_object_layer(rng, scene, shape, _texture_spec(rng, kind, scene.palette), _sinusoidal_path))
    return layers


def _camouflage_objects(rng: np.random.Generator, scene: _Scene, num_objects: int) -> list[Layer]:
    """Large objects (base radius 0.15-0.28 of the frame side) textured by new realisations of the background's
    texture (same kind, colours and scale), so only their motion sets them apart; the largest at the back, so a
    small object is not hidden for long behind a large one."""
    side = float(scene.frame_size.min())
    shapes = sorted((_random_shape(rng, side, (0.15, 0.28)) for _ in range(num_objects)), key=lambda shape: -shape[1])
    return [_object_layer(rng, scene, shape, scene.background, _orbit_path) for shape in shapes]


class _Kind(NamedTuple):
    """How one generator kind samples its layers (the renderer is shared)."""

    background_textures: tuple[str, ...]  # The background's texture kind is drawn uniformly from these.
    sample_objects: Callable[[np.random.Generator, _Scene, int], list[Layer]]  # Back to front.


_KINDS = {
    "easy": _Kind(_TEXTURE_KINDS, _easy_objects),
    # Only the fine noise texture: where two realisations meet, a periodic one shows a phase break and the
    # smooth blobs a visible cut (boundary gradient ~2.8x elsewhere, vs ~1.2x for speckle).
    "camouflage": _Kind(("speckle",), _camouflage_objects),
}


def _make_layers(
    rng: np.random.Generator, num_frames: int, height: int, width: int, num_objects: int, kind: _Kind
) -> list[Layer]:
    """Samples the background (first) and the objects in back-to-front order."""
    times = np.arange(num_frames, dtype=np.float64)
    # A dark, a mid and a bright colour around one random base colour: every texture has contrast,
    # and all surfaces share the same colour distribution.
    ramp = np.linspace(-1.0, 1.0, _PALETTE_SIZE)[:, None] * rng.uniform(25.0, 45.0)
    palette = np.clip(rng.uniform(80.0, 170.0, 3) + ramp + rng.normal(0.0, 25.0, (_PALETTE_SIZE, 3)), 20.0, 235.0)
    background_kind = kind.background_textures[rng.integers(len(kind.background_textures))]

    # Background: slow drift plus a small wobble, i.e. a smooth sub-pixel translation per frame.
    pan = rng.uniform(-0.5, 0.5, 2) * times[:, None] + _sinusoid(rng, times, rng.uniform(0.0, 1.5, 2), (0.05, 0.2))
    low, high = pan.min(axis=0), pan.max(axis=0)
    tex_w, tex_h = _TEXTURE_SCALE * (np.ceil(high - low).astype(int) + np.array([width, height]) + 2 * _TEXTURE_PAD)
    background = _texture_spec(rng, background_kind, palette)
    layers = [
        Layer(
            _texture(rng, background, tex_h, tex_w),
            _TEXTURE_SCALE * (high + _TEXTURE_PAD),
            np.zeros(num_frames),
            pan,
            None,
        )
    ]
    scene = _Scene(times, np.array([width, height], dtype=np.float64), palette, background)
    return layers + kind.sample_objects(rng, scene, num_objects)


def _lighting(rng: np.random.Generator, num_frames: int, height: int, width: int) -> np.ndarray:
    """Returns [T, H, W] float32 multiplicative illumination: drifting gain times a rotating soft gradient."""
    times = np.arange(num_frames, dtype=np.float64)
    gain = 1.0 + rng.uniform(0.1, 0.15) * np.sin(rng.uniform(0.1, 0.3) * times + rng.uniform(0.0, 2.0 * np.pi))
    direction = rng.uniform(0.0, 2.0 * np.pi) + rng.choice([-1.0, 1.0]) * rng.uniform(0.02, 0.06) * times
    rows, cols = np.mgrid[0:height, 0:width]
    cols = (cols - 0.5 * (width - 1)) / (0.5 * max(height, width))
    rows = (rows - 0.5 * (height - 1)) / (0.5 * max(height, width))
    projection = np.cos(direction)[:, None, None] * cols + np.sin(direction)[:, None, None] * rows
    gradient = 1.0 + rng.uniform(0.1, 0.2) * np.tanh(projection)
    return (gain[:, None, None] * gradient).astype(np.float32)


def generate_video(
    seed: int,
    *,
    num_frames: int,
    height: int,
    width: int,
    num_objects: int = 3,
    flow_gap: int = 1,
    lighting: bool = True,
    kind: str = "easy",
) -> SyntheticVideo:
    """Renders one deterministic synthetic video with exact masks and backward flow.

    Args:
      seed: non-negative integer; the same seed and arguments give bit-identical arrays.
      num_frames: T >= 1.
      height: H >= 1.
      width: W >= 1.
      num_objects: K in [0, 255] moving objects on top of the background.
      flow_gap: g >= 1; flow[t] points into frame t - g (negated flow to t + g for t < g).
      lighting: whether to apply smooth illumination changes over time (after texturing).
      kind: 'easy' (small objects whose texture kind differs from the background's: one frame separates
        them) or 'camouflage' (large objects textured like the background, circling at 2-4 px/frame per
        128 px of frame side: only motion separates them; meant for frames of 128 x 128 or more). See
        docs/synthetic.md.

    Returns:
      A `SyntheticVideo` with frames [T, H, W, 3] uint8, masks [T, H, W] uint8 and flow
      [T, H, W, 2] float32.

    Raises:
      ValueError: if an argument is out of range.
    """
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    for name, value in (("num_frames", num_frames), ("height", height), ("width", width), ("flow_gap", flow_gap)):
        if value < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if not 0 <= num_objects <= 255:
        raise ValueError(f"num_objects must be in [0, 255], got {num_objects}")
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, _KINDS))}, got {kind!r}")

    rng = np.random.default_rng(seed)
    layers = _make_layers(rng, num_frames, height, width, num_objects, _KINDS[kind])
    illumination = _lighting(rng, num_frames, height, width) if lighting else None
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float64)
    frames = np.empty((num_frames, height, width, 3), np.uint8)
    masks = np.zeros((num_frames, height, width), np.uint8)
    flow = np.zeros((num_frames, height, width, 2), np.float32)
    for t in range(num_frames):
        source, sign = flow_lib.flow_source(t, flow_gap, num_frames)
        image = np.zeros((height, width, 3), np.float32)
        for layer_id, layer in enumerate(layers):
            cos_t, sin_t = np.cos(layer.angles[t]), np.sin(layer.angles[t])
            offset_x, offset_y = cols - layer.centres[t, 0], rows - layer.centres[t, 1]
            canon_x = cos_t * offset_x + sin_t * offset_y  # T_t^{-1}(x) = R(-angle) (x - centre).
            canon_y = cos_t * offset_y - sin_t * offset_x
            colour = cv2.remap(
                layer.texture,
                (_TEXTURE_SCALE * canon_x + layer.origin[0]).astype(np.float32),
                (_TEXTURE_SCALE * canon_y + layer.origin[1]).astype(np.float32),
                cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_REFLECT,
            )
            if layer.radius is None:
                image[:], inside = colour, np.ones((height, width), bool)
            else:
                distance = np.hypot(canon_x, canon_y) - layer.radius(np.arctan2(canon_y, canon_x))
                # Radial distance approximates the signed distance well enough for 1-px anti-aliasing.
                alpha = np.clip(0.5 - distance, 0.0, 1.0).astype(np.float32)[..., None]
                image += alpha * (colour - image)
                inside = distance < 0.0
            masks[t][inside] = layer_id
            if source != t:
                cos_s, sin_s = np.cos(layer.angles[source]), np.sin(layer.angles[source])
                flow[t, inside, 0] = (
                    sign * (cos_s * canon_x - sin_s * canon_y + layer.centres[source, 0] - cols)[inside]
                )
                flow[t, inside, 1] = (
                    sign * (sin_s * canon_x + cos_s * canon_y + layer.centres[source, 1] - rows)[inside]
                )
        if illumination is not None:
            image *= illumination[t][..., None]
        frames[t] = np.clip(np.rint(image), 0, 255)
    return SyntheticVideo(frames, masks, flow)


def generate_videos(seed: int, num_videos: int, **kwargs) -> list[SyntheticVideo]:
    """Generates `num_videos` independent videos; video i uses a seed derived from (seed, i).

    Args:
      seed: non-negative integer base seed.
      num_videos: number of videos (>= 0).
      **kwargs: keyword arguments of `generate_video` (num_frames, height and width are required; `kind`
        chooses the generator).

    Returns:
      A list of `SyntheticVideo`s, each as described in `generate_video`.

    Raises:
      ValueError: if an argument is out of range.
    """
    if seed < 0 or num_videos < 0:
        raise ValueError(f"seed and num_videos must be non-negative, got {seed} and {num_videos}")
    return [generate_video(video_seed(seed, i), **kwargs) for i in range(num_videos)]


def video_seed(seed: int, index: int) -> int:
    """The seed `generate_videos(seed, ...)` renders its video `index` with."""
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def scene_layers(
    seed: int, *, num_frames: int, height: int, width: int, num_objects: int = 3, kind: str = "easy"
) -> list[Layer]:
    """The layers, back to front (the background first), that `generate_video` renders for the same
    seed and arguments: the layer of id k draws mask id k, and a pixel shows the frontmost layer
    whose outline contains it (`Layer.radius`; the background contains every pixel)."""
    if kind not in _KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, _KINDS))}, got {kind!r}")
    return _make_layers(np.random.default_rng(seed), num_frames, height, width, num_objects, _KINDS[kind])
