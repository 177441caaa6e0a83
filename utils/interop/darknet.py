"""Darknet interop: read and write `.cfg` / `.weights`, load them into our YOLOv4-tiny.

Darknet's formats, as darknet (AlexeyAB / hank-ai) and OpenCV's importer read them:

`.cfg`: INI-like sections. `[net]` (or `[network]`) holds the input size; every later section
is one layer, numbered from 0 in file order - the index `[route] layers=` refers to and the index
our layer names carry (`conv_i`, `bn_i`, see nets/backbone.py).

`.weights`: a header of int32 major, minor, revision, then `seen` (images trained on) as int64
when major * 10 + minor >= 2, else int32; then float32 values, per `[convolutional]` in cfg order:
    with batch_normalize=1: beta (bias, filters), gamma (scale, filters), running mean (filters),
                            running variance (filters), kernel (filters, in, size, size);
    without:                bias (filters), kernel (filters, in, size, size).
Keras keeps the kernel as (size, size, in, filters).

Batch-norm epsilon: darknet (AlexeyAB / hank-ai, CPU and GPU) divides by sqrt(var + 1e-5), which
is our BN_EPSILON. OpenCV's importer uses 1e-6 (pjreddie's original CPU value), so OpenCV's
outputs differ slightly from darknet's where running variances are small.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from nets.model_data import (
    ANCHORS_MASK,
    DARKNET_SCALE_X_Y,
    DEFAULT_INPUT_SHAPE,
    HEAD_CONV_INDICES,
    INPUT_MULTIPLE,
    MAX_CLASSES,
    MAX_INPUT_SIDE,
    check_input_hw,
    load_anchors,
)
from utils.errors import YoloError

# Layer types this module can read weights for (and YOLOv4-tiny is made of).
SUPPORTED_LAYER_TYPES = ("convolutional", "route", "maxpool", "upsample", "yolo")
# Header written by default: darknet's current version, with a 64-bit `seen`.
DEFAULT_WEIGHTS_VERSION = (0, 2, 5)
# The cfg index of the [yolo] layer that follows each head.
YOLO_LAYER_INDICES = tuple(index + 1 for index in HEAD_CONV_INDICES)
# What OpenCV's darknet importer adds to the running variance (darknet itself adds 1e-5).
OPENCV_BN_EPSILON = 1e-6


class DarknetError(YoloError, ValueError):
    """A darknet file we cannot use, or a model darknet cannot express; the message names the file.

    Exit code 2, as every unusable input (1 means "some inputs left out": docs/exit-codes.md).
    """


class DarknetWeightsSizeError(DarknetError):
    """A `.weights` file with fewer or more floats than its cfg needs."""


class UnsupportedLayerError(DarknetError):
    """A cfg section type this converter does not implement."""


class ArchitectureMismatchError(DarknetError):
    """A cfg that is not YOLOv4-tiny as nets/yolo.py builds it."""


# --------------------------------------------------------------------------------------- cfg


@dataclass
class CfgSection:
    """One `[type]` section of a darknet cfg.

    Attributes:
        type: the section name without brackets, e.g. "convolutional".
        options: key -> value, both stripped, in file order.
        index: darknet layer index (0 for the first layer after [net]); -1 for [net].
        line: 1-based line number of the `[type]` header (0 for generated sections).
    """

    type: str
    options: dict[str, str] = field(default_factory=dict)
    index: int = -1
    line: int = 0

    def describe(self, source: str | Path | None = None) -> str:
        where = f"{source}: " if source else ""
        at = f" (line {self.line})" if self.line else ""
        name = "[net]" if self.index < 0 else f"layer {self.index} [{self.type}]"
        return f"{where}{name}{at}"

    def get_int(self, key: str, default: int | None = None) -> int:
        return int(self._get(key, default, int))

    def get_float(self, key: str, default: float | None = None) -> float:
        return float(self._get(key, default, float))

    def get_str(self, key: str, default: str | None = None) -> str:
        return str(self._get(key, default, str))

    def get_list(self, key: str, cast=float, default: Sequence | None = None) -> list:
        """A comma-separated value as a list (empty items, e.g. a trailing comma, are dropped)."""
        if key not in self.options:
            if default is None:
                raise DarknetError(f"{self.describe()}: missing '{key}'")
            return list(default)
        try:
            return [cast(v) for v in self.options[key].split(",") if v.strip()]
        except ValueError:
            raise DarknetError(f"{self.describe()}: '{key}={self.options[key]}' is not a list of numbers") from None

    def _get(self, key, default, cast):
        if key not in self.options:
            if default is None:
                raise DarknetError(f"{self.describe()}: missing '{key}'")
            return default
        try:
            return cast(self.options[key])
        except ValueError:
            raise DarknetError(f"{self.describe()}: '{key}={self.options[key]}' is not a {cast.__name__}") from None


@dataclass
class DarknetCfg:
    """A parsed cfg: the [net] section and the layers in order (`layers[i].index == i`)."""

    net: CfgSection
    layers: list[CfgSection]
    source: str = "<cfg>"

    @property
    def width(self) -> int:
        return self.net.get_int("width", DEFAULT_INPUT_SHAPE[1])

    @property
    def height(self) -> int:
        return self.net.get_int("height", DEFAULT_INPUT_SHAPE[0])

    @property
    def channels(self) -> int:
        return self.net.get_int("channels", 3)

    def where(self, section: CfgSection) -> str:
        return section.describe(self.source)

    def yolo_layers(self) -> list[CfgSection]:
        return [s for s in self.layers if s.type == "yolo"]

    def to_text(self) -> str:
        """The cfg as darknet reads it."""
        blocks = []
        for section in [self.net, *self.layers]:
            lines = [f"[{section.type}]"] + [f"{k}={v}" for k, v in section.options.items()]
            blocks.append("\n".join(lines))
        return "\n\n".join(blocks) + "\n"


_SECTION_RE = re.compile(r"^\[\s*([A-Za-z_]+)\s*\]$")


def parse_cfg(path: str | Path | None = None, text: str | None = None) -> DarknetCfg:
    """Parse a darknet cfg from a file or from `text`. Comments (`#`, `;`) and blank lines are skipped.

    Raises DarknetError naming the file and line for malformed lines, and UnsupportedLayerError for
    a layer type outside SUPPORTED_LAYER_TYPES.
    """
    if (path is None) == (text is None):
        raise ValueError("give exactly one of path or text")
    source = str(path) if path is not None else "<cfg text>"
    if text is None:
        try:
            text = Path(path).read_text()
        except OSError as err:
            raise DarknetError(f"{source}: cannot read cfg ({err.strerror})") from None
    sections: list[CfgSection] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        match = _SECTION_RE.match(line)
        if match:
            sections.append(CfgSection(match.group(1).lower(), {}, line=number))
            continue
        if "=" not in line:
            raise DarknetError(f"{source}: line {number}: expected '[section]' or 'key=value', got {raw!r}")
        if not sections:
            raise DarknetError(f"{source}: line {number}: 'key=value' before the first [section]")
        key, value = line.split("=", 1)
        sections[-1].options[key.strip()] = "".join(value.split())
    if not sections or sections[0].type not in ("net", "network"):
        raise DarknetError(f"{source}: the first section must be [net]")
    net, layers = sections[0], sections[1:]
    for index, section in enumerate(layers):
        section.index = index
        if section.type not in SUPPORTED_LAYER_TYPES:
            raise UnsupportedLayerError(
                f"{section.describe(source)}: layer type [{section.type}] is not supported "
                f"(supported: {', '.join(SUPPORTED_LAYER_TYPES)})"
            )
    return DarknetCfg(net, layers, source)


def route_sources(cfg: DarknetCfg, section: CfgSection) -> list[int]:
    """The absolute layer indices a [route] concatenates (negative ones count back from it)."""
    sources = []
    for rel in section.get_list("layers", int):
        absolute = rel if rel >= 0 else section.index + rel
        if not 0 <= absolute < section.index:
            raise DarknetError(f"{cfg.where(section)}: route to layer {rel} is outside layers 0..{section.index - 1}")
        sources.append(absolute)
    return sources


@dataclass(frozen=True)
class ConvSpec:
    """What one darknet [convolutional] stores in a .weights file."""

    index: int
    filters: int
    size: int
    in_channels: int
    batch_normalize: bool

    @property
    def kernel_floats(self) -> int:
        return self.filters * self.in_channels * self.size * self.size

    @property
    def num_floats(self) -> int:
        return self.filters * (4 if self.batch_normalize else 1) + self.kernel_floats

    @property
    def keras_kernel_shape(self) -> tuple[int, int, int, int]:
        return (self.size, self.size, self.in_channels, self.filters)


def conv_specs(cfg: DarknetCfg) -> list[ConvSpec]:
    """Follow the channel counts through the cfg and list its convolutions in file order."""
    channels: list[int] = []
    current = cfg.channels
    specs = []
    for section in cfg.layers:
        if section.type == "convolutional":
            groups = section.get_int("groups", 1)
            if groups != 1:
                raise UnsupportedLayerError(
                    f"{cfg.where(section)}: grouped convolution (groups={groups}) is not supported"
                )
            spec = ConvSpec(
                index=section.index,
                filters=section.get_int("filters"),
                size=section.get_int("size"),
                in_channels=current,
                batch_normalize=section.get_int("batch_normalize", 0) == 1,
            )
            specs.append(spec)
            current = spec.filters
        elif section.type == "route":
            total = sum(channels[i] for i in route_sources(cfg, section))
            groups = section.get_int("groups", 1)
            if total % groups:
                raise DarknetError(f"{cfg.where(section)}: {total} channels do not split into {groups} groups")
            current = total // groups
        # maxpool, upsample and yolo keep the channel count.
        channels.append(current)
    return specs


def expected_floats(specs: Sequence[ConvSpec]) -> int:
    return sum(spec.num_floats for spec in specs)


# ----------------------------------------------------------------------------------- weights


@dataclass(frozen=True)
class WeightsHeader:
    """The .weights header. `seen` is int64 on disk when major * 10 + minor >= 2, else int32."""

    major: int = DEFAULT_WEIGHTS_VERSION[0]
    minor: int = DEFAULT_WEIGHTS_VERSION[1]
    revision: int = DEFAULT_WEIGHTS_VERSION[2]
    seen: int = 0

    @property
    def seen_is_int64(self) -> bool:
        # darknet's load_weights_upto: 64-bit from version 0.2 on; versions >= 1000 mark transposed files.
        return self.major * 10 + self.minor >= 2 and self.major < 1000 and self.minor < 1000

    @property
    def num_bytes(self) -> int:
        return 12 + (8 if self.seen_is_int64 else 4)

    def __str__(self) -> str:
        return f"version {self.major}.{self.minor}.{self.revision}, seen {self.seen:,}"


def read_weights_header(path: str | Path) -> tuple[WeightsHeader, int]:
    """The header of a .weights file and the number of floats after it, from its first 20 bytes
    and its size: what a cfg is checked against before anything is read or built."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            data = file.read(20)
    except OSError as err:
        raise DarknetError(f"{path}: cannot read weights ({err.strerror})") from None
    if len(data) < 16:
        raise DarknetError(f"{path}: {len(data)} bytes is too short for a darknet .weights header")
    major, minor, revision = (int(v) for v in np.frombuffer(data, "<i4", 3))
    probe = WeightsHeader(major, minor, revision)
    if len(data) < probe.num_bytes:
        raise DarknetError(f"{path}: {len(data)} bytes is too short for a version {major}.{minor} header")
    seen_dtype = "<i8" if probe.seen_is_int64 else "<i4"
    seen = int(np.frombuffer(data, seen_dtype, 1, offset=12)[0])
    body = size - probe.num_bytes
    if body % 4:
        raise DarknetWeightsSizeError(
            f"{path}: {body} bytes after the {probe.num_bytes}-byte header is not a whole number of float32s "
            "(truncated, or the header version is wrong)"
        )
    return WeightsHeader(major, minor, revision, seen), body // 4


def read_weights(path: str | Path) -> tuple[WeightsHeader, np.ndarray]:
    """Read a .weights file: its header and every float after it (float32, 1-D)."""
    path = Path(path)
    header, _ = read_weights_header(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise DarknetError(f"{path}: cannot read weights ({err.strerror})") from None
    floats = np.frombuffer(data, "<f4", (len(data) - header.num_bytes) // 4, offset=header.num_bytes)
    return header, floats.astype(np.float32)


def check_weights_size(weights_path: str | Path, cfg: DarknetCfg, what: str = "") -> None:
    """DarknetWeightsSizeError unless the .weights file holds the floats `cfg` needs, judged from
    the file's size and header alone (nothing is read or built for a file that does not fit)."""
    _, found = read_weights_header(weights_path)
    needed = expected_floats(conv_specs(cfg))
    if found != needed:
        problem = "truncated" if found < needed else "over-long"
        raise DarknetWeightsSizeError(
            f"{weights_path}: {problem}: expected {needed:,} floats after the header{what}, found {found:,}"
        )


def write_weights(path: str | Path, floats: np.ndarray, header: WeightsHeader = WeightsHeader()) -> None:
    """Write a .weights file: `header`, then `floats` as little-endian float32."""
    seen_dtype = "<i8" if header.seen_is_int64 else "<i4"
    with open(path, "wb") as f:
        f.write(np.asarray([header.major, header.minor, header.revision], "<i4").tobytes())
        f.write(np.asarray([header.seen], seen_dtype).tobytes())
        f.write(np.ascontiguousarray(floats, "<f4").tobytes())


@dataclass
class ConvWeights:
    """One conv's parameters in Keras layout. kernel: (size, size, in, filters).

    With batch norm: gamma, beta, mean, variance (filters,) each and bias None; without: bias (filters,).
    """

    kernel: np.ndarray
    bias: np.ndarray | None = None
    gamma: np.ndarray | None = None
    beta: np.ndarray | None = None
    mean: np.ndarray | None = None
    variance: np.ndarray | None = None


def split_conv_weights(
    specs: Sequence[ConvSpec], floats: np.ndarray, source: str | Path = "<weights>", what: str = ""
) -> dict[int, ConvWeights]:
    """Cut the floats of a .weights file into per-conv parameters, keyed by cfg layer index.

    Raises DarknetWeightsSizeError when the file holds fewer or more floats than `specs` need.
    """
    needed = expected_floats(specs)
    if floats.size != needed:
        problem = "truncated" if floats.size < needed else "over-long"
        raise DarknetWeightsSizeError(
            f"{source}: {problem}: expected {needed:,} floats after the header{what}, found {floats.size:,}"
        )
    out: dict[int, ConvWeights] = {}
    offset = 0

    def take(count: int) -> np.ndarray:
        nonlocal offset
        chunk = floats[offset : offset + count]
        offset += count
        return chunk

    for spec in specs:
        n = spec.filters
        if spec.batch_normalize:
            beta, gamma, mean, variance = take(n), take(n), take(n), take(n)
            kernel = _kernel_to_keras(take(spec.kernel_floats), spec)
            out[spec.index] = ConvWeights(kernel, gamma=gamma, beta=beta, mean=mean, variance=variance)
        else:
            bias = take(n)
            out[spec.index] = ConvWeights(_kernel_to_keras(take(spec.kernel_floats), spec), bias=bias)
    return out


def _kernel_to_keras(flat: np.ndarray, spec: ConvSpec) -> np.ndarray:
    # darknet (out, in, kh, kw) -> Keras (kh, kw, in, out)
    kernel = flat.reshape(spec.filters, spec.in_channels, spec.size, spec.size)
    return np.ascontiguousarray(kernel.transpose(2, 3, 1, 0))


def join_conv_weights(specs: Sequence[ConvSpec], weights: dict[int, ConvWeights]) -> np.ndarray:
    """The inverse of split_conv_weights: the float32 body of a .weights file."""
    parts = []
    for spec in specs:
        w = weights[spec.index]
        if w.kernel.shape != spec.keras_kernel_shape:
            raise ValueError(f"conv_{spec.index}: kernel {w.kernel.shape} != cfg's {spec.keras_kernel_shape}")
        parts += [w.beta, w.gamma, w.mean, w.variance] if spec.batch_normalize else [w.bias]
        parts.append(w.kernel.transpose(3, 2, 0, 1).ravel())  # -> (out, in, kh, kw)
    return np.concatenate([np.asarray(p, np.float32).ravel() for p in parts])


def random_darknet_weights(specs: Sequence[ConvSpec], seed: int = 0) -> np.ndarray:
    """Synthetic weights for tests and benchmarks, with non-trivial batch-norm statistics.

    Running means ~ N(0, 0.2), variances in [0.5, 2], gammas in [0.5, 1.5], betas ~ N(0, 0.1);
    kernels are He-scaled so activations stay O(1) through the network.
    """
    rng = np.random.default_rng(seed)
    weights = {}
    for spec in specs:
        fan_in = spec.in_channels * spec.size * spec.size
        kernel = rng.normal(0, np.sqrt(2.0 / fan_in), spec.keras_kernel_shape).astype(np.float32)
        n = spec.filters
        if spec.batch_normalize:
            weights[spec.index] = ConvWeights(
                kernel,
                gamma=rng.uniform(0.5, 1.5, n),
                beta=rng.normal(0, 0.1, n),
                mean=rng.normal(0, 0.2, n),
                variance=rng.uniform(0.5, 2.0, n),
            )
        else:
            weights[spec.index] = ConvWeights(kernel, bias=rng.normal(0, 0.1, n))
    return join_conv_weights(specs, weights)


# ------------------------------------------------------------------------------ YOLOv4-tiny

# Darknet's yolov4-tiny.cfg training settings, written into generated cfgs so darknet can train them.
_NET_TRAINING_OPTIONS = {
    "batch": "64",
    "subdivisions": "1",
    "momentum": "0.9",
    "decay": "0.0005",
    "angle": "0",
    "saturation": "1.5",
    "exposure": "1.5",
    "hue": ".1",
    "learning_rate": "0.00261",
    "burn_in": "1000",
    "max_batches": "2000200",
    "policy": "steps",
    "steps": "1600000,1800000",
    "scales": ".1,.1",
}
_YOLO_TRAINING_OPTIONS = {
    "jitter": ".3",
    "cls_normalizer": "1.0",
    "iou_normalizer": "0.07",
    "iou_loss": "ciou",
    "ignore_thresh": ".7",
    "truth_thresh": "1",
    "random": "0",
    "resize": "1.5",
    "nms_kind": "greedynms",
    "beta_nms": "0.6",
}


def _fmt(value: float) -> str:
    return f"{value:g}"


def yolov4_tiny_cfg(
    num_classes: int,
    anchors: Sequence[Sequence[float]] | None = None,
    anchors_mask: Sequence[Sequence[int]] = ANCHORS_MASK,
    scale_x_y: float = DARKNET_SCALE_X_Y,
    input_hw: tuple[int, int] = DEFAULT_INPUT_SHAPE,
) -> DarknetCfg:
    """YOLOv4-tiny as a darknet cfg - the same 38 layers as darknet's yolov4-tiny.cfg.

    This is the architecture nets/yolo.py builds; check_architecture compares other cfgs against it.
    """
    anchors = load_anchors().tolist() if anchors is None else [list(a) for a in anchors]
    layers: list[CfgSection] = []

    def add(kind: str, **options) -> None:
        layers.append(CfgSection(kind, {k: str(v) for k, v in options.items()}, index=len(layers)))

    def conv(filters: int, size: int, stride: int = 1) -> None:
        add("convolutional", batch_normalize=1, filters=filters, size=size, stride=stride, pad=1, activation="leaky")

    def csp(filters: int) -> None:
        conv(filters, 3)
        add("route", layers=-1, groups=2, group_id=1)
        conv(filters // 2, 3)
        conv(filters // 2, 3)
        add("route", layers="-1,-2")
        conv(filters, 1)
        add("route", layers="-6,-1")
        add("maxpool", size=2, stride=2)

    num_outputs = len(anchors_mask[0]) * (5 + num_classes)
    anchors_text = ",".join(f"{_fmt(w)},{_fmt(h)}" for w, h in anchors)

    def head_and_yolo(mask: Sequence[int]) -> None:
        add("convolutional", size=1, stride=1, pad=1, filters=num_outputs, activation="linear")
        add(
            "yolo",
            mask=",".join(str(m) for m in mask),
            anchors=anchors_text,
            classes=num_classes,
            num=len(anchors),
            scale_x_y=_fmt(scale_x_y),
            **_YOLO_TRAINING_OPTIONS,
        )

    conv(32, 3, 2)  # 0
    conv(64, 3, 2)  # 1
    csp(64)  # 2-9
    csp(128)  # 10-17
    csp(256)  # 18-25 (23 is feat1)
    conv(512, 3)  # 26
    conv(256, 1)  # 27
    conv(512, 3)  # 28
    head_and_yolo(anchors_mask[0])  # 29, 30
    add("route", layers=-4)  # 31 -> 27
    conv(128, 1)  # 32
    add("upsample", stride=2)  # 33
    add("route", layers="-1,23")  # 34
    conv(256, 3)  # 35
    head_and_yolo(anchors_mask[1])  # 36, 37

    height, width = input_hw
    net = CfgSection("net", {**_NET_TRAINING_OPTIONS, "width": str(width), "height": str(height), "channels": "3"})
    return DarknetCfg(net, layers, "<yolov4-tiny>")


@dataclass(frozen=True)
class YoloSettings:
    """What a cfg says about decoding: the YoloV4Tiny config entries darknet's [yolo] layers hold."""

    num_classes: int
    anchors: list[list[float]]
    anchors_mask: list[list[int]]
    scale_x_y: float
    input_hw: tuple[int, int]


def _check_section(cfg: DarknetCfg, got: CfgSection, want: CfgSection, keys: dict[str, object]) -> None:
    for key, default in keys.items():
        expected = want.options.get(key, default)
        actual = got.options.get(key, default)
        if str(actual).replace(" ", "") != str(expected).replace(" ", ""):
            raise ArchitectureMismatchError(
                f"{cfg.where(got)}: {key}={actual}, but YOLOv4-tiny has {key}={expected} here"
            )


def check_architecture(cfg: DarknetCfg) -> YoloSettings:
    """Check that `cfg` is YOLOv4-tiny as nets/yolo.py builds it, and return its decoding settings.

    Classes, anchors, masks, scale_x_y and the input size may differ from darknet's defaults;
    everything that shapes the network must not. Raises ArchitectureMismatchError naming the
    first section that differs.
    """
    if cfg.channels != 3:
        raise ArchitectureMismatchError(f"{cfg.where(cfg.net)}: channels={cfg.channels}, our model takes 3 (RGB)")
    for size, name in ((cfg.height, "height"), (cfg.width, "width")):
        if size % INPUT_MULTIPLE or not 0 < size <= MAX_INPUT_SIDE:
            raise ArchitectureMismatchError(
                f"{cfg.where(cfg.net)}: {name}={size} is not a multiple of {INPUT_MULTIPLE} "
                f"from {INPUT_MULTIPLE} to {MAX_INPUT_SIDE}"
            )
    # Layer types first (they do not depend on classes or anchors), naming the first difference.
    shape = yolov4_tiny_cfg(1).layers
    for got, want in zip(cfg.layers, shape, strict=False):
        if got.type != want.type:
            raise ArchitectureMismatchError(f"{cfg.where(got)}: YOLOv4-tiny has a [{want.type}] here")
    if len(cfg.layers) > len(shape):
        raise ArchitectureMismatchError(
            f"{cfg.where(cfg.layers[len(shape)])}: YOLOv4-tiny ends after layer {len(shape) - 1}; "
            f"this cfg has {len(cfg.layers)} layers"
        )
    if len(cfg.layers) < len(shape):
        raise ArchitectureMismatchError(
            f"{cfg.source}: ends after layer {len(cfg.layers) - 1}; YOLOv4-tiny continues with "
            f"layer {len(cfg.layers)} [{shape[len(cfg.layers)].type}] ({len(shape)} layers in all)"
        )
    settings = _yolo_settings(cfg)
    reference = yolov4_tiny_cfg(
        settings.num_classes, settings.anchors, settings.anchors_mask, settings.scale_x_y, settings.input_hw
    )
    _check_sections(cfg, reference)
    return settings


def _yolo_settings(cfg: DarknetCfg) -> YoloSettings:
    """The decoding settings of `cfg`'s two [yolo] layers (they must agree); ArchitectureMismatchError
    naming the section when they cannot decode our heads."""
    yolos = cfg.yolo_layers()
    num_classes = yolos[0].get_int("classes")
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ArchitectureMismatchError(f"{cfg.where(yolos[0])}: classes={num_classes}, not 1 to {MAX_CLASSES}")
    anchors_flat = yolos[0].get_list("anchors", float)
    if len(anchors_flat) % 2:
        raise ArchitectureMismatchError(f"{cfg.where(yolos[0])}: odd number of anchor values ({len(anchors_flat)})")
    if not all(0 < value < float("inf") for value in anchors_flat):
        raise ArchitectureMismatchError(f"{cfg.where(yolos[0])}: anchors must be positive numbers")
    anchors = [anchors_flat[i : i + 2] for i in range(0, len(anchors_flat), 2)]
    masks = []
    for yolo in yolos:
        for key in ("classes", "anchors", "scale_x_y"):
            if yolo.options.get(key) != yolos[0].options.get(key):
                raise ArchitectureMismatchError(
                    f"{cfg.where(yolo)}: {key} differs from {cfg.where(yolos[0])}; both heads must agree"
                )
        if yolo.get_int("new_coords", 0) != 0:
            raise ArchitectureMismatchError(f"{cfg.where(yolo)}: new_coords=1 decoding is not supported")
        if yolo.get_int("num", len(anchors)) != len(anchors):
            raise ArchitectureMismatchError(f"{cfg.where(yolo)}: num={yolo.options['num']} but {len(anchors)} anchors")
        mask = yolo.get_list("mask", int)
        if not mask or max(mask) >= len(anchors) or min(mask) < 0:
            raise ArchitectureMismatchError(f"{cfg.where(yolo)}: mask {mask} does not index the {len(anchors)} anchors")
        masks.append(mask)
    if len(masks[0]) != len(masks[1]):
        raise ArchitectureMismatchError(f"{cfg.source}: both [yolo] layers must use as many anchors ({masks})")
    return YoloSettings(
        num_classes=num_classes,
        anchors=anchors,
        anchors_mask=masks,
        scale_x_y=yolos[0].get_float("scale_x_y", 1.0),
        input_hw=(cfg.height, cfg.width),
    )


def _check_sections(cfg: DarknetCfg, reference: DarknetCfg) -> None:
    """Each section of `cfg` against YOLOv4-tiny's (`reference`, same classes and anchors): every
    option that shapes the network; ArchitectureMismatchError naming the first that differs."""
    for got, want in zip(cfg.layers, reference.layers, strict=True):
        if got.type == "convolutional":
            _check_section(
                cfg,
                got,
                want,
                {"filters": None, "size": None, "stride": 1, "batch_normalize": 0, "activation": "linear"},
            )
            size = got.get_int("size")
            padding = size // 2 if got.get_int("pad", 0) else got.get_int("padding", 0)
            if padding != size // 2:
                raise ArchitectureMismatchError(f"{cfg.where(got)}: padding {padding}, YOLOv4-tiny pads size/2 (pad=1)")
            for key, neutral in (("groups", 1), ("dilation", 1), ("stride_x", None), ("stride_y", None)):
                value = got.options.get(key)
                if value is not None and (neutral is None or int(value) != neutral):
                    raise ArchitectureMismatchError(f"{cfg.where(got)}: {key}={value} is not supported")
        elif got.type == "route":
            if route_sources(cfg, got) != route_sources(reference, want):
                raise ArchitectureMismatchError(
                    f"{cfg.where(got)}: routes to layers {route_sources(cfg, got)}, "
                    f"YOLOv4-tiny routes to {route_sources(reference, want)}"
                )
            _check_section(cfg, got, want, {"groups": 1, "group_id": 0})
        elif got.type == "maxpool":
            _check_section(cfg, got, want, {"size": None, "stride": 1})
        elif got.type == "upsample":
            _check_section(cfg, got, want, {"stride": 2})


# --------------------------------------------------------------------------- Keras model side


@dataclass
class LoadReport:
    """What load_darknet_weights did.

    Attributes:
        weights_path, cfg_path: the files read (cfg_path None when the layout was inferred).
        header: the .weights header.
        weights_classes: classes the darknet heads were trained for; model_classes: the model's.
        loaded: model layers that received darknet weights (conv_i, bn_i names).
        skipped: conv name -> why its darknet weights were not used (e.g. class count differs).
        fresh: model layers with weights that kept their initialisation (attention blocks, skipped heads).
    """

    weights_path: str
    cfg_path: str | None
    header: WeightsHeader
    weights_classes: int
    model_classes: int
    model_name: str
    num_convs: int
    loaded: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    fresh: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def num_loaded_convs(self) -> int:
        return sum(name.startswith("conv_") for name in self.loaded)

    @property
    def complete(self) -> bool:
        """True when every darknet conv loaded and no model layer kept its initialisation."""
        return not self.skipped and not self.fresh

    def __str__(self) -> str:
        cfg = self.cfg_path or f"none given (YOLOv4-tiny assumed, {self.weights_classes} classes from the file size)"
        lines = [
            f"Darknet weights {self.weights_path} ({self.header}); cfg: {cfg}",
            f"Loaded {self.num_loaded_convs} of {self.num_convs} darknet convolutions into {self.model_name}.",
        ]
        if self.weights_classes != self.model_classes:
            lines.append(
                f"Class count differs: weights have {self.weights_classes}, the model {self.model_classes}; "
                "backbone and neck loaded, the heads start fresh."
            )
        for name, why in self.skipped.items():
            lines.append(f"  not loaded: {name}: {why}")
        if self.fresh:
            lines.append(f"Kept their fresh initialisation: {', '.join(self.fresh)}")
        elif not self.skipped:
            lines.append("Every layer with weights came from darknet.")
        lines += [f"Note: {note}" for note in self.notes]
        return "\n".join(lines)


def _model_conv_layers(model) -> dict[int, object]:
    convs = {}
    for layer in model.layers:
        match = re.fullmatch(r"conv_(\d+)", layer.name)
        if match:
            convs[int(match.group(1))] = layer
    return convs


def model_settings(model) -> YoloSettings:
    """The decoding settings a YoloV4Tiny carries (input size: its fixed one, else the default)."""
    height, width = model.image_shape[:2]
    input_hw = (height or DEFAULT_INPUT_SHAPE[0], width or DEFAULT_INPUT_SHAPE[1])
    return YoloSettings(model.num_classes, model.anchors, model.anchors_mask, model.scale_x_y, input_hw)


def model_to_cfg(model) -> DarknetCfg:
    """The darknet cfg of a YoloV4Tiny: classes, anchors, masks, scale_x_y and input size from its config."""
    s = model_settings(model)
    return yolov4_tiny_cfg(s.num_classes, s.anchors, s.anchors_mask, s.scale_x_y, s.input_hw)


def _infer_cfg(model, num_floats: int, weights_path) -> DarknetCfg:
    """Without a cfg: assume YOLOv4-tiny with the model's anchors and find the class count that fits the file."""
    s = model_settings(model)
    per_anchor_set = len(s.anchors_mask[0])

    def cfg_for(classes: int) -> DarknetCfg:
        return yolov4_tiny_cfg(classes, s.anchors, s.anchors_mask, s.scale_x_y, s.input_hw)

    own = expected_floats(conv_specs(cfg_for(s.num_classes)))
    # Each extra class adds A outputs to both heads: A * (512 + 1) + A * (256 + 1) floats.
    per_class = expected_floats(conv_specs(cfg_for(s.num_classes + 1))) - own
    extra, remainder = divmod(num_floats - own, per_class)
    classes = s.num_classes + extra
    if remainder or classes < 1:
        problem = "truncated" if num_floats < own else "over-long"
        raise DarknetWeightsSizeError(
            f"{weights_path}: {problem}: expected {own:,} floats after the header for YOLOv4-tiny with "
            f"{s.num_classes} classes and {per_anchor_set} anchors per head, found {num_floats:,}, which fits "
            "no class count; pass the weights' .cfg to load other architectures"
        )
    return cfg_for(classes)


def load_darknet_weights(model, weights_path: str | Path, cfg_path: str | Path | None = None) -> LoadReport:
    """Load darknet YOLOv4-tiny weights into a YoloV4Tiny of any attention (phi 0-5, any points), by cfg layer index.

    Every darknet conv goes into the model layer `conv_i` (+ `bn_i`) of the same cfg index; attention
    layers have no darknet counterpart and keep their initialisation. When the weights' class count
    differs from the model's, the two head convs (conv_29, conv_36) keep their initialisation too.

    Args:
        model: a nets.yolo.YoloV4Tiny.
        weights_path: the darknet .weights file.
        cfg_path: its .cfg; when None the file is taken to be YOLOv4-tiny and its class count is
            inferred from its size.

    Returns:
        LoadReport; print it to see what loaded and what did not.

    Raises:
        DarknetWeightsSizeError: the file holds fewer or more floats than the cfg needs.
        ArchitectureMismatchError / UnsupportedLayerError: the cfg is not YOLOv4-tiny.
    """
    _, num_floats = read_weights_header(weights_path)
    if cfg_path is not None:
        cfg = parse_cfg(cfg_path)
        settings = check_architecture(cfg)
        what = f" for {cfg.source} ({settings.num_classes} classes)"
    else:
        cfg = _infer_cfg(model, num_floats, weights_path)
        settings = check_architecture(cfg)
        what = ""
    check_weights_size(weights_path, cfg, what)  # before the file is read
    header, floats = read_weights(weights_path)
    specs = conv_specs(cfg)
    conv_weights = split_conv_weights(specs, floats, weights_path, what)

    report = LoadReport(
        weights_path=str(weights_path),
        cfg_path=None if cfg_path is None else str(cfg_path),
        header=header,
        weights_classes=settings.num_classes,
        model_classes=model.num_classes,
        model_name=model.name,
        num_convs=len(specs),
    )
    if cfg_path is not None:
        ours = model_settings(model)
        for what, theirs, mine in (
            ("anchors", settings.anchors, ours.anchors),
            ("anchor masks", settings.anchors_mask, ours.anchors_mask),
            ("scale_x_y", settings.scale_x_y, ours.scale_x_y),
        ):
            if np.shape(theirs) != np.shape(mine) or not np.allclose(theirs, mine):
                report.notes.append(f"{what} differ: cfg {theirs}, model {mine}; the model keeps its own")
    model_convs = _model_conv_layers(model)
    pending = []
    for spec in specs:
        name = f"conv_{spec.index}"
        layer = model_convs.get(spec.index)
        if layer is None:
            raise ArchitectureMismatchError(f"{model.name} has no layer {name} for the cfg's layer {spec.index}")
        w = conv_weights[spec.index]
        model_shape = tuple(layer.kernel.shape)
        if model_shape != spec.keras_kernel_shape:
            if spec.index in HEAD_CONV_INDICES and model_shape[:3] == spec.keras_kernel_shape[:3]:
                report.skipped[name] = (
                    f"head for {settings.num_classes} classes ({spec.filters} filters), the model's has "
                    f"{model_shape[3]} for {model.num_classes} classes"
                )
                continue
            raise ArchitectureMismatchError(
                f"{name}: darknet kernel {spec.keras_kernel_shape} (h, w, in, out) "
                f"does not fit the model's {model_shape}"
            )
        if spec.batch_normalize:
            bn = model.get_layer(f"bn_{spec.index}")
            pending.append((layer, [w.kernel]))
            pending.append((bn, [w.gamma, w.beta, w.mean, w.variance]))
        else:
            pending.append((layer, [w.kernel, w.bias]))
    # Assign only once everything fitted, so a failure leaves the model untouched.
    for layer, values in pending:
        layer.set_weights(values)
        report.loaded.append(layer.name)
    covered = set(report.loaded)
    report.fresh = sorted(layer.name for layer in model.layers if layer.weights and layer.name not in covered)
    if getattr(model, "attention_layers", None) and not model.identity_init:
        report.notes.append(
            "the attention blocks were not built to start as the identity (identity_init): the model does not "
            "compute what darknet's does until they train"
        )
    return report


def darknet_weights_from_model(model) -> tuple[DarknetCfg, np.ndarray]:
    """A phi-0 YoloV4Tiny as a darknet cfg and the float32 body of its .weights file."""
    if model.attention != "none":
        raise DarknetError(
            f"{model.name} uses '{model.attention}' attention, which darknet's yolov4-tiny cfg cannot express; "
            "only attention 'none' (phi 0) models can be written to darknet"
        )
    if getattr(model, "fusion", "concat") != "concat":
        raise DarknetError(
            f"{model.name} fuses its neck with '{model.fusion}' fusion, which darknet's yolov4-tiny cfg cannot "
            "express; only --fusion concat models can be written to darknet"
        )
    cfg = model_to_cfg(model)
    specs = conv_specs(cfg)
    weights = {}
    for spec in specs:
        conv = model.get_layer(f"conv_{spec.index}")
        if spec.batch_normalize:
            gamma, beta, mean, variance = (np.asarray(v) for v in model.get_layer(f"bn_{spec.index}").get_weights())
            weights[spec.index] = ConvWeights(
                np.asarray(conv.kernel), gamma=gamma, beta=beta, mean=mean, variance=variance
            )
        else:
            kernel, bias = (np.asarray(v) for v in conv.get_weights())
            weights[spec.index] = ConvWeights(kernel, bias=bias)
    return cfg, join_conv_weights(specs, weights)


def save_darknet(
    model, cfg_path: str | Path, weights_path: str | Path, header: WeightsHeader = WeightsHeader()
) -> None:
    """Write a phi-0 YoloV4Tiny as a darknet `.cfg` + `.weights` pair that darknet and OpenCV read.

    The cfg carries the model's classes, anchors, masks, scale_x_y and input size (its fixed
    input shape, else DEFAULT_INPUT_SHAPE).
    """
    cfg, floats = darknet_weights_from_model(model)
    Path(cfg_path).write_text(cfg.to_text())
    write_weights(weights_path, floats, header)


def model_from_darknet(
    cfg_path: str | Path,
    weights_path: str | Path,
    class_names: Sequence[str] | None = None,
    attention: str = "none",
    input_shape: Sequence[int | None] | None = None,
    fresh_heads: bool = False,
    attention_at: str | Sequence[str] | None = None,
    fusion: str = "concat",
):
    """Build a YoloV4Tiny from a darknet cfg and load its weights.

    Classes, anchors, masks, scale_x_y and the input size come from the cfg (so predictions decode
    as darknet decodes them) and are stored in the model's config.

    Args:
        cfg_path, weights_path: the darknet files.
        class_names: optional names; their number must equal the cfg's classes unless `fresh_heads`.
        attention: attention block for the new model ("none" gives darknet's network exactly).
        input_shape: (height, width, 3) to override the cfg's size; (None, None, 3) for any size.
        fresh_heads: with class names of another count than the cfg's (COCO's 80 to your 20), build
            the model for them: the backbone and neck load, the two head convolutions keep their
            fresh initialisation (the report says so). False: another count is an error.
        attention_at: the blocks' insertion points (nets.yolo.INSERTION_POINTS); None: the block's default.
            The blocks start as the identity (identity_init), so the model computes what darknet's
            does until it trains.
        fusion: "concat" (darknet's route) or "weighted" (nets.fusion; starts as 0.99995 x the concatenation).

    Returns:
        (model, LoadReport).

    Raises:
        DarknetWeightsSizeError: the weights file's size does not fit the cfg (checked before any
            model is built or the file read).
        ArchitectureMismatchError: the cfg is not YOLOv4-tiny, or asks for more than MAX_CLASSES
            classes or an input side over MAX_INPUT_SIDE.
    """
    from nets.yolo import YoloV4Tiny

    cfg = parse_cfg(cfg_path)
    settings = check_architecture(cfg)
    # The weights must fit the cfg before a model is built for it (a cfg's classes or size alone
    # can ask for gigabytes).
    check_weights_size(weights_path, cfg, f" for {cfg.source} ({settings.num_classes} classes)")
    num_classes = settings.num_classes
    if class_names is not None and len(class_names) != num_classes:
        if not fresh_heads:
            raise DarknetError(f"{cfg_path} has classes={num_classes} but {len(class_names)} class names were given")
        num_classes = len(class_names)
    if input_shape is None:
        input_shape = (*settings.input_hw, 3)
    elif None not in tuple(input_shape)[:2]:
        check_input_hw(tuple(input_shape)[:2])
    model = YoloV4Tiny(
        num_classes,
        attention=attention,
        anchors=settings.anchors,
        anchors_mask=settings.anchors_mask,
        input_shape=input_shape,
        class_names=class_names,
        scale_x_y=settings.scale_x_y,
        attention_at=attention_at,
        fusion=fusion,
        identity_init=True,
    )
    report = load_darknet_weights(model, weights_path, cfg_path)
    return model, report
