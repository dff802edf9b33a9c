"""How a slim tensor stands for an original one, and the slim layers."""

import numpy as np


class View:
    """How the last axis of a slim tensor maps onto the original tensor's.

    Slim feature `i` times `scale[i]` equals original feature `kept[i]`.
    Every other original feature `k` equals `fill[k]` when that is finite (a
    constant, usually 0), else no layer of the slim model reads it. `source`
    names the layers that removed or rescaled features.
    """

    def __init__(self, width, kept=None, scale=None, fill=None, source=None):
        self.width = width
        self.source = source
        if kept is None:
            kept = np.arange(width or 0)
        self.kept = np.asarray(kept, "int64")
        if scale is None:
            scale = np.ones(len(self.kept), "float32")
        self.scale = np.asarray(scale, "float32")
        if fill is None:
            fill = np.full(width or 0, np.nan, "float32")
        self.fill = np.asarray(fill, "float32")

    @property
    def removed(self):
        return np.setdiff1d(np.arange(self.width or 0), self.kept)

    @property
    def unit_scale(self):
        return bool(np.all(self.scale == 1))

    @property
    def is_identity(self):
        return len(self.kept) == (self.width or 0) and self.unit_scale

    def rows(self):
        """`(kept, scale, fill)`, what a layer reading this tensor needs."""
        return self.kept, self.scale, self.fill

    def with_scale(self, scale):
        return View(self.width, self.kept, scale, self.fill, self.source)

    @classmethod
    def concat(cls, views):
        kept, scale, offset = [], [], 0
        for view in views:
            kept.append(view.kept + offset)
            scale.append(view.scale)
            offset += view.width
        sources = dict.fromkeys(v.source for v in views if v.source)
        return cls(
            offset,
            np.concatenate(kept),
            np.concatenate(scale),
            np.concatenate([v.fill for v in views]),
            source="', '".join(sources) or None,
        )


class SlimLayer:
    """A layer of the slim model as planned: what `keras_l0.summary` counts.

    `kind` is "dense" (`input_width`, `units`, `use_bias`), "embedding"
    (`input_dim`, `units`), "sized" (`params`), or "clone" (`layer`, used as
    it is).
    """

    def __init__(self, kind, layer=None, **dims):
        self.kind = kind
        self.layer = layer
        for name, value in dims.items():
            setattr(self, name, value)


class Channels:
    """Union-find over the feature channels of the graph's tensors.

    Every tensor (or inner unit space, e.g. a `Bidirectional` direction)
    owns a run of channel ids; joined channels form a group, which the slim
    model keeps or removes as a whole.
    """

    def __init__(self):
        self.offsets = {}
        self.parent = []

    def space(self, key, width):
        if key not in self.offsets:
            self.offsets[key] = (len(self.parent), width)
            self.parent.extend(range(len(self.parent), len(self.parent) + width))
        start, width = self.offsets[key]
        return np.arange(start, start + width)

    def find(self, i):
        root = i
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[i] != root:
            self.parent[i], i = root, self.parent[i]
        return root

    def join(self, a, b):
        for i, j in zip(np.asarray(a).tolist(), np.asarray(b).tolist()):
            ri, rj = self.find(i), self.find(j)
            if ri != rj:
                self.parent[max(ri, rj)] = min(ri, rj)

    def roots(self):
        return np.array([self.find(i) for i in range(len(self.parent))], "int64")
