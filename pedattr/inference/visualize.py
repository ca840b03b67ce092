"""Draw ALM's attribute boxes: one overlay per image, and a grid like the paper's Fig. 5.

Boxes come from :class:`~pedattr.inference.predictor.Prediction` (pixels of the original image)
and are drawn in one colour per pyramid level, the same colours everywhere (:func:`level_colour`):
red for the lowest level (3b), green for the middle one (4d), blue for the top one (5b). Pedestrian
crops are small (often under 100 x 250 pixels), so images are upscaled to at least ``min_height``
pixels before drawing, which keeps lines and labels legible. Where the prediction has them, a
cross in the level's colour marks the peak of that level's activation map for the attribute
(:attr:`~pedattr.inference.predictor.Prediction.peaks`): where the features put its evidence,
next to the box. Pillow only; files are written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from pedattr.inference.predictor import ImageLike, Prediction, to_rgb_image
from pedattr.utils.io import atomic_write

#: Level colours, lowest level first (then reused cyclically).
LEVEL_COLOURS: tuple[tuple[int, int, int], ...] = (
    (230, 25, 75),
    (60, 180, 75),
    (0, 130, 200),
    (245, 130, 48),
    (145, 30, 180),
)
MIN_HEIGHT = 256
_BACKGROUND = (255, 255, 255)
_TEXT = (0, 0, 0)
_PAD = 6
#: Narrow crops get a legend this wide (the image is centred above it).
_MIN_LEGEND_WIDTH = 220
Font = ImageFont.ImageFont | ImageFont.FreeTypeFont


def level_colour(index: int) -> tuple[int, int, int]:
    """The colour of the ``index``-th level (0 = lowest)."""
    return LEVEL_COLOURS[index % len(LEVEL_COLOURS)]


def _font(size: int) -> Font:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: one fixed bitmap font
        return ImageFont.load_default()


def _text_size(font: Font, text: str) -> tuple[int, int]:
    left, top, right, bottom = font.getbbox(text)
    return int(right - left), int(bottom - min(top, 0))


def _all_levels(prediction: Prediction) -> list[str]:
    """The levels the prediction has boxes at, in the model's order (their colour index)."""
    return list(next(iter(prediction.boxes.values()), {}))


def _levels(prediction: Prediction, levels: Sequence[str] | None) -> list[str]:
    available = _all_levels(prediction)
    if levels is None:
        return available
    unknown = [level for level in levels if level not in available]
    if unknown:
        raise ValueError(f"unknown levels {unknown}; the prediction has {available}")
    return list(levels)


def _attributes(prediction: Prediction, attributes: Sequence[str] | None) -> list[str]:
    if attributes is None:
        return list(prediction.attributes)
    unknown = [name for name in attributes if name not in prediction.probabilities]
    if unknown:
        raise ValueError(f"unknown attributes {unknown}")
    return list(attributes)


def _canvas(
    image: ImageLike, prediction: Prediction, height: int, *, exact: bool = False
) -> tuple[Image.Image, float, float]:
    """The image as RGB at least (or, ``exact``, exactly) ``height`` high, and the factors
    mapping the prediction's pixel boxes onto it."""
    canvas = to_rgb_image(image)
    if exact or canvas.height < height:
        width = max(1, round(canvas.width * height / canvas.height))
        canvas = canvas.resize((width, height), Image.Resampling.BICUBIC)
    else:
        canvas = canvas.copy()  # never draw on the caller's image
    original_height, original_width = prediction.image_size
    return canvas, canvas.width / original_width, canvas.height / original_height


def _draw_levels(
    draw: ImageDraw.ImageDraw,
    prediction: Prediction,
    name: str,
    levels: Sequence[str],
    scale: tuple[float, float],
    font: Font,
    width: int,
    label: str | None = None,
) -> None:
    """One attribute's box, and its activation-map peak when recorded, at each of ``levels``,
    each in its level's colour; a label goes into a corner that differs per level."""
    all_levels = _all_levels(prediction)
    for level in levels:
        index = all_levels.index(level)
        colour = level_colour(index)
        _draw_box(draw, prediction.boxes[name][level], scale, colour, label, font, width, index)
        if name in prediction.peaks:
            _draw_peak(draw, prediction.peaks[name][level], scale, colour, width)


def _draw_box(
    draw: ImageDraw.ImageDraw,
    box: Sequence[float],
    scale: tuple[float, float],
    colour: tuple[int, int, int],
    label: str | None,
    font: Font,
    width: int,
    corner: int = 0,
) -> None:
    sx, sy = scale
    x0, y0, x1, y1 = box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy
    draw.rectangle((x0, y0, max(x1, x0 + 1), max(y1, y0 + 1)), outline=colour, width=width)
    if label:
        # Each level labels another corner (inside the box), so that the labels of boxes that
        # nearly coincide, as the levels' boxes of one attribute often do, stay apart.
        text_w, text_h = _text_size(font, label)
        tag_w, tag_h = text_w + 4, text_h + 3
        x = x0 if corner % 2 == 0 else max(x0, x1 - tag_w)
        y = y0 if corner % 4 < 2 else max(y0, y1 - tag_h)
        draw.rectangle((x, y, x + tag_w, y + tag_h), fill=colour)
        draw.text((x + 2, y + 1), label, fill=(255, 255, 255), font=font)


def _draw_peak(
    draw: ImageDraw.ImageDraw,
    point: Sequence[float],
    scale: tuple[float, float],
    colour: tuple[int, int, int],
    width: int,
) -> None:
    """A cross at an activation-map peak, outlined in white so that it shows on any colour."""
    x, y = point[0] * scale[0], point[1] * scale[1]
    arm = 3 * width + 3
    for outline, stroke in (((255, 255, 255), width + 2), (colour, width)):
        draw.line((x - arm, y, x + arm, y), fill=outline, width=stroke)
        draw.line((x, y - arm, x, y + arm), fill=outline, width=stroke)


def _wrap(items: Sequence[str], font: Font, width: int, separator: str = "  ") -> list[str]:
    """Join ``items`` with ``separator`` into lines no wider than ``width`` pixels (an item
    wider than that gets a line of its own)."""
    lines: list[str] = []
    current = ""
    for item in items:
        candidate = f"{current}{separator}{item}" if current else item
        if current and _text_size(font, candidate)[0] > width:
            lines.append(current)
            current = item
        else:
            current = candidate
    return [*lines, current] if current else lines


def _legend(
    levels: Sequence[str], entries: Sequence[str], width: int, font: Font, separator: str = "  "
) -> Image.Image:
    """A white strip: a swatch per level colour, then the entries (the numbered attributes, or
    the words of a title with ``separator=" "``) wrapped to the width."""
    line_height = _text_size(font, "Ag")[1] + 4
    swatch = line_height - 4
    body = _wrap(entries, font, width - 2 * _PAD, separator)
    strip = Image.new("RGB", (width, _PAD + line_height * (1 + len(body)) + _PAD), _BACKGROUND)
    draw = ImageDraw.Draw(strip)
    x = _PAD
    for index, level in enumerate(levels):
        draw.rectangle((x, _PAD + 1, x + swatch, _PAD + 1 + swatch), fill=level_colour(index))
        draw.text((x + swatch + 3, _PAD), level, fill=_TEXT, font=font)
        x += swatch + 3 + _text_size(font, level)[0] + 10
    for row, text in enumerate(body, 1):
        draw.text((_PAD, _PAD + row * line_height), text, fill=_TEXT, font=font)
    return strip


def _stack(parts: Sequence[Image.Image], *, centre: bool = False) -> Image.Image:
    """Images one above the other on white, left-aligned or centred."""
    width = max(part.width for part in parts)
    out = Image.new("RGB", (width, sum(part.height for part in parts)), _BACKGROUND)
    y = 0
    for part in parts:
        out.paste(part, ((width - part.width) // 2 if centre else 0, y))
        y += part.height
    return out


def _sizes(height: int) -> tuple[Font, int]:
    """A font and a line width for drawing on a canvas ``height`` pixels high."""
    return _font(max(11, height // 22)), max(2, height // 128)


def draw_attribute_boxes(
    image: ImageLike,
    prediction: Prediction,
    *,
    levels: Sequence[str] | None = None,
    attributes: Sequence[str] | None = None,
    min_height: int = MIN_HEIGHT,
) -> Image.Image:
    """The image with each attribute's box at each level, a colour per level, and a legend.

    Every box carries its attribute's number, and the legend below the image lists the level
    colours and the numbered attributes with their probabilities.

    Args:
        image: the image the prediction was made on (path, Pillow image, array or tensor), or
            any resized copy of it (``prediction.preview``): boxes are scaled to its size.
        prediction: from :class:`~pedattr.inference.predictor.Predictor`.
        levels: the levels to draw (default: all).
        attributes: the attributes to draw (default: the predicted positives).
        min_height: smaller images are upscaled to this height first.

    Returns:
        A new RGB image.
    """
    canvas, sx, sy = _canvas(image, prediction, min_height)
    names = _attributes(prediction, attributes)
    drawn_levels = _levels(prediction, levels) if prediction.boxes else []
    font, width = _sizes(canvas.height)
    draw = ImageDraw.Draw(canvas)
    for number, name in enumerate(names, 1):
        _draw_levels(draw, prediction, name, drawn_levels, (sx, sy), font, width, str(number))
    entries = [
        f"{number} {name} {prediction.probabilities[name]:.2f}"
        for number, name in enumerate(names, 1)
    ] or ["no attribute above its threshold"]
    if names and prediction.peaks:
        entries.append("+ the peak of each level's activation map")
    legend_font = _font(max(11, min(canvas.height // 22, 18)))
    legend = _legend(drawn_levels, entries, max(canvas.width, _MIN_LEGEND_WIDTH), legend_font)
    return _stack([canvas, legend], centre=True)


def _image_format(path: str | os.PathLike) -> str:
    """Pillow's format name for a path's extension (PNG, JPEG, ...)."""
    suffix = Path(path).suffix.lower()
    image_format = Image.registered_extensions().get(suffix)
    if image_format is None or image_format not in Image.SAVE:
        raise ValueError(f"{path}: cannot tell an image format Pillow writes from the extension")
    return image_format


def save_image(image: Image.Image, path: str | os.PathLike) -> Path:
    """Write ``image`` atomically in the format its extension names; returns the path."""
    image_format = _image_format(path)
    atomic_write(path, lambda tmp: image.save(tmp, format=image_format))
    return Path(path)


# --- grid (Fig. 5) ----------------------------------------------------------------------------


def _panel(
    image: ImageLike,
    prediction: Prediction,
    attribute: str | None,
    levels: Sequence[str],
    caption: str,
    height: int,
) -> Image.Image:
    """One picture of the grid: the image at ``height``, the attribute's boxes at ``levels``,
    and a caption above it."""
    canvas, sx, sy = _canvas(image, prediction, height, exact=True)
    font, width = _sizes(height)
    if attribute is not None:
        _draw_levels(ImageDraw.Draw(canvas), prediction, attribute, levels, (sx, sy), font, width)
    caption_font = _font(max(11, min(height // 20, 16)))
    text_w, text_h = _text_size(caption_font, caption)
    panel = Image.new("RGB", (max(canvas.width, text_w + 4), text_h + 6 + height), _BACKGROUND)
    panel.paste(canvas, (0, text_h + 6))
    ImageDraw.Draw(panel).text((2, 2), caption, fill=_TEXT, font=caption_font)
    return panel


def _row(panels: Sequence[Image.Image], title: str, font: Font) -> Image.Image:
    """Panels side by side under a title line (just the title when there are none)."""
    text_w, text_h = _text_size(font, title)
    top = text_h + 8
    width = max(sum(p.width + _PAD for p in panels) + _PAD, text_w + 2 * _PAD)
    height = top + max((p.height + _PAD for p in panels), default=0)
    row = Image.new("RGB", (width, height), _BACKGROUND)
    ImageDraw.Draw(row).text((_PAD, 3), title, fill=_TEXT, font=font)
    x = _PAD
    for panel in panels:
        row.paste(panel, (x, top))
        x += panel.width + _PAD
    return row


@dataclass
class _GridRow:
    title: str
    cells: list[tuple[int, str]]  # (image index, attribute)
    image: int | None = None  # the image of a by-image row, drawn plain when it has no cell


def _grid_rows(
    predictions: Sequence[Prediction], attributes: Sequence[str] | None, by: str
) -> list[_GridRow]:
    """The grid's rows, in the requested order."""
    if by == "image":
        return [
            _GridRow(p.name, [(i, name) for name in _attributes(p, attributes)], i)
            for i, p in enumerate(predictions)
        ]
    if by != "attribute":
        raise ValueError(f"by must be 'image' or 'attribute', got {by!r}")
    if attributes is None:  # every attribute some image has, each with the images that have it
        order = list(predictions[0].probabilities)
        names = [n for n in order if any(n in p.attributes for p in predictions)]
        return [
            _GridRow(n, [(i, n) for i, p in enumerate(predictions) if n in p.attributes])
            for n in names
        ]
    _attributes(predictions[0], attributes)  # unknown names fail here
    return [_GridRow(n, [(i, n) for i in range(len(predictions))]) for n in attributes]


def attribute_box_grid(
    images: Sequence[ImageLike],
    predictions: Sequence[Prediction],
    out_path: str | os.PathLike,
    *,
    attributes: Sequence[str] | None = None,
    levels: Sequence[str] | None = None,
    by: str = "image",
    split_levels: bool = True,
    cell_height: int = MIN_HEIGHT,
    title: str | None = None,
) -> Path:
    """Write a grid of attribute boxes like the paper's Fig. 5.

    Each cell is one (image, attribute) pair. With ``split_levels`` (Fig. 5) a cell is one
    picture per level, each with that level's box; otherwise one picture with all levels.
    Rows are images (``by="image"``: each row shows one image's attributes) or attributes
    (``by="attribute"``: each row shows one attribute on every image). Captions give the
    attribute or the image and the probability.

    Args:
        images: the images the predictions were made on (or resized copies of them).
        predictions: one per image.
        out_path: the file to write; its extension picks the format (``.png``, ``.jpg``, ...).
        attributes: the attributes to show for every image (default: each image's predicted
            positives).
        levels: the levels to show (default: all).
        by: "image" or "attribute", what a row holds.
        split_levels: one picture per level (True) or all levels in one.
        cell_height: height of every picture, in pixels.
        title: a line above the grid.

    Returns:
        ``out_path`` as a Path.

    Raises:
        ValueError: lengths differ, unknown attributes or levels, or an unknown extension.
    """
    _image_format(out_path)  # a bad extension fails before any drawing
    if len(images) != len(predictions):
        raise ValueError(f"{len(images)} images but {len(predictions)} predictions")
    if not predictions:
        raise ValueError("nothing to draw: no predictions")
    shown_levels = _levels(predictions[0], levels) if predictions[0].boxes else []
    font = _font(max(12, min(cell_height // 16, 20)))
    rows = []
    for row in _grid_rows(predictions, attributes, by):
        panels = []
        for index, name in row.cells:
            prediction = predictions[index]
            label = f"{name if by == 'image' else prediction.name} "
            label += f"{prediction.probabilities[name]:.2f}"
            groups = [[level] for level in shown_levels] if split_levels else [shown_levels]
            for group in groups or [[]]:
                caption = f"{label} ({group[0]})" if split_levels and group else label
                panels.append(_panel(images[index], prediction, name, group, caption, cell_height))
        if not row.cells and row.image is not None:
            empty = "no attribute above its threshold"
            image, prediction = images[row.image], predictions[row.image]
            panels.append(_panel(image, prediction, None, [], empty, cell_height))
        rows.append(_row(panels, row.title, font))
    width = max(row.width for row in rows)
    # The title is wrapped word by word: a long one must not run off the grid's right edge.
    header = [_legend(shown_levels, title.split() if title else [], width, font, separator=" ")]
    return save_image(_stack(header + rows), out_path)
