"""Small deterministic datasets in the real formats, for demos, CI and end-to-end tests.

Every image shows textured shapes on a noisy background; a small model learns them in a few CPU
minutes. Written files (``root`` defaults to ``data/demo``):

* ``cls/``: ImageNet-style classification. ``{train,val}/<class>/<n>.jpg`` class folders plus
  ``meta/{train,val}.txt`` annotation lists (``<class>/<n>.jpg <label>``), readable by
  mmpretrain's ``CustomDataset`` and ``ImageNet``. Classes: the shape, each with its own stripe
  orientation.
* ``coco/``: COCO instances. ``{train,val}/<n>.jpg`` and ``annotations/instances_{train,val}.json``
  with boxes and polygon masks of 1-3 shapes per image (one colour per class).
* ``ade/``: ADE20K-style semantic segmentation. ``images/{training,validation}/<n>.jpg`` and
  ``annotations/{training,validation}/<n>.png`` label maps where 0 is "other" (ignored with
  ``reduce_zero_label``), 1 background and 2.. the shapes.

The same seed writes the same bytes (numpy's seeded generator, Pillow's JPEG encoder).
"""
import json
import math
import os
import os.path as osp

import numpy as np
from PIL import Image, ImageDraw

DEMO_CLASSES = ('circle', 'square', 'triangle', 'cross')
# Class colours of the detection / segmentation sets (classification uses random colours).
_CLASS_COLOURS = ((220, 40, 40), (40, 200, 60), (50, 80, 230), (230, 200, 30))
SPLITS = dict(cls=(320, 80), coco=(160, 40), ade=(160, 40))


def _shape_polygon(kind, cx, cy, r, angle):
    """Vertices (x, y) of a shape of radius ``r`` centred at (cx, cy)."""
    if kind == 'circle':
        n, radii = 32, [r] * 32
    elif kind == 'square':
        n, radii = 4, [r] * 4
    elif kind == 'triangle':
        n, radii = 3, [r] * 3
    else:  # cross: 12 vertices alternating between the arm tips and the inner corners
        n, radii = 12, None
    if kind == 'cross':
        a, b = r, r * 0.38
        pts = [(b, a), (b, b), (a, b), (a, -b), (b, -b), (b, -a), (-b, -a), (-b, -b), (-a, -b),
               (-a, b), (-b, b), (-b, a)]
        c, s = math.cos(angle), math.sin(angle)
        return [(cx + x * c - y * s, cy + x * s + y * c) for x, y in pts]
    return [(cx + radii[i] * math.cos(angle + 2 * math.pi * i / n),
             cy + radii[i] * math.sin(angle + 2 * math.pi * i / n)) for i in range(n)]


def _background(rng, size):
    base = rng.integers(60, 200, 3)
    noise = rng.normal(0, 18, (size, size, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def _stripes(size, label, period=6):
    """A binary stripe texture whose orientation depends on the class."""
    y, x = np.mgrid[:size, :size]
    phase = [y, x, x + y, x - y][label % 4]
    return (phase // (period // 2)) % 2 == 0


def _paste(img, polygon, colour, texture=None):
    mask_img = Image.new('L', (img.shape[1], img.shape[0]), 0)
    ImageDraw.Draw(mask_img).polygon(polygon, fill=1)
    mask = np.asarray(mask_img, dtype=bool)
    fill = np.array(colour, dtype=np.uint8)
    if texture is None:
        img[mask] = fill
    else:
        img[mask & texture] = fill
        img[mask & ~texture] = (fill * 0.45).astype(np.uint8)
    return mask


def _save_jpg(array, path):
    os.makedirs(osp.dirname(path), exist_ok=True)
    Image.fromarray(array).save(path, quality=95)


def _write_cls(root, rng, size=64):
    lines = {}
    for split, count in zip(('train', 'val'), SPLITS['cls']):
        lines[split] = []
        for n in range(count):
            label = n % len(DEMO_CLASSES)
            img = _background(rng, size)
            r = rng.uniform(0.22, 0.38) * size
            c = rng.uniform(r, size - r, 2)
            colour = rng.integers(0, 256, 3)
            _paste(img, _shape_polygon(DEMO_CLASSES[label], c[0], c[1], r, rng.uniform(0, 6.3)),
                   colour, _stripes(size, label))
            name = f'{DEMO_CLASSES[label]}/{n:04d}.jpg'
            _save_jpg(img, osp.join(root, split, name))
            lines[split].append(f'{name} {label}')
    os.makedirs(osp.join(root, 'meta'), exist_ok=True)
    for split, rows in lines.items():
        with open(osp.join(root, 'meta', f'{split}.txt'), 'w') as f:
            f.write('\n'.join(rows) + '\n')


def _random_scene(rng, size, max_objects, num_classes):
    """Non-overlapping (class, polygon) pairs on one image."""
    objects, centres = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        for _attempt in range(20):
            r = rng.uniform(0.12, 0.24) * size
            c = rng.uniform(r + 1, size - r - 1, 2)
            if all(np.hypot(*(c - c2)) > r + r2 + 2 for c2, r2 in centres):
                break
        else:
            continue
        label = int(rng.integers(num_classes))
        centres.append((c, r))
        objects.append((label, _shape_polygon(DEMO_CLASSES[label], c[0], c[1], r,
                                               rng.uniform(0, 6.3))))
    return objects


def _polygon_area(poly):
    x, y = np.array(poly).T
    return float(0.5 * abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _write_coco(root, rng, size=128, num_classes=3):
    categories = [dict(id=i + 1, name=DEMO_CLASSES[i]) for i in range(num_classes)]
    for split, count in zip(('train', 'val'), SPLITS['coco']):
        images, annotations = [], []
        for n in range(count):
            img = _background(rng, size)
            for label, poly in _random_scene(rng, size, 3, num_classes):
                _paste(img, poly, _CLASS_COLOURS[label])
                xs, ys = [p[0] for p in poly], [p[1] for p in poly]
                x0, y0 = max(min(xs), 0), max(min(ys), 0)
                x1, y1 = min(max(xs), size), min(max(ys), size)
                annotations.append(dict(
                    id=len(annotations) + 1, image_id=n + 1, category_id=label + 1,
                    bbox=[round(x0, 2), round(y0, 2), round(x1 - x0, 2), round(y1 - y0, 2)],
                    area=round(_polygon_area(poly), 2), iscrowd=0,
                    segmentation=[[round(v, 2) for p in poly for v in p]]))
            file_name = f'{n:04d}.jpg'
            _save_jpg(img, osp.join(root, split, file_name))
            images.append(dict(id=n + 1, file_name=file_name, width=size, height=size))
        os.makedirs(osp.join(root, 'annotations'), exist_ok=True)
        with open(osp.join(root, 'annotations', f'instances_{split}.json'), 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories), f)


def _write_ade(root, rng, size=64, num_classes=3):
    for split, count in zip(('training', 'validation'), SPLITS['ade']):
        for n in range(count):
            img = _background(rng, size)
            seg = np.ones((size, size), np.uint8)  # 1 = background; 0 ("other") is unused
            for label, poly in _random_scene(rng, size, 3, num_classes):
                mask = _paste(img, poly, _CLASS_COLOURS[label])
                seg[mask] = label + 2
            _save_jpg(img, osp.join(root, 'images', split, f'{n:04d}.jpg'))
            os.makedirs(osp.join(root, 'annotations', split), exist_ok=True)
            Image.fromarray(seg).save(osp.join(root, 'annotations', split, f'{n:04d}.png'))


def generate_demo_datasets(root='data/demo', seed=0, tasks=('cls', 'coco', 'ade')):
    """Write the demo datasets under ``root``; returns the paths per task."""
    writers = dict(cls=_write_cls, coco=_write_coco, ade=_write_ade)
    unknown = set(tasks) - set(writers)
    if unknown:
        raise ValueError(f'Unknown demo task(s) {sorted(unknown)}; choose from {list(writers)}.')
    paths = {}
    for i, task in enumerate(tasks):
        # one generator per task, so each set is the same whichever others are written
        writers[task](osp.join(root, task), np.random.default_rng([seed, i]))
        paths[task] = osp.join(root, task)
    return paths
