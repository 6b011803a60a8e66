"""Draw the autograd graph of a tensor: the backward functions PyTorch recorded, from a loss down to the leaves;
and (``draw_backward``) a hand-written backward pass with its first wrong gradient marked.

``show(loss, params)`` uses torchviz where it and Graphviz's ``dot`` program are installed. Without them it
prints an indented tree and draws the same graph with matplotlib, so a lesson needs nothing extra.
The graph is read from ``grad_fn.next_functions``: every node is a backward function, and an edge
A → B means "the gradient flows from A into B". A leaf tensor that requires a gradient ends in an
``AccumulateGrad`` node, which adds the incoming gradient into that tensor's ``.grad``.
"""
import shutil
from dataclasses import dataclass, field

import torch
from matplotlib.figure import Figure

COLORS = {"root": "#f6c28b", "op": "#e4e4e4", "param": "#9ecae1", "leaf": "#d9ecf6"}


@dataclass(frozen=True)
class Node:
    op: str  # the backward function's class name, e.g. "MseLossBackward0" or "AccumulateGrad"
    leaf: str | None = None  # for AccumulateGrad: the leaf tensor's name, or None if it has none
    shape: tuple | None = None  # for AccumulateGrad: the leaf tensor's shape

    def label(self):
        if self.op != "AccumulateGrad":
            return self.op
        return f"{self.leaf or 'unnamed leaf'} {self.shape if self.shape else '(scalar)'}"


@dataclass
class Graph:
    """nodes[0] is the root; edges are (from, to) indices along which the gradient flows."""

    nodes: list
    edges: list = field(default_factory=list)
    root_name: str | None = None

    def inputs(self, i):
        return [b for a, b in self.edges if a == i]

    def depths(self):
        """Longest distance of each node from the root, so that every edge points one layer down or more."""
        order, seen = [], set()

        def visit(i):  # post-order: a node comes after everything it feeds gradient into
            seen.add(i)
            for j in self.inputs(i):
                if j not in seen:
                    visit(j)
            order.append(i)

        visit(0)
        depth = {0: 0}
        for i in reversed(order):
            for j in self.inputs(i):
                depth[j] = max(depth.get(j, 0), depth[i] + 1)
        return [depth[i] for i in range(len(self.nodes))]


def _named(params):
    """params as a list of (name, tensor) pairs, from a dict or ``model.named_parameters()``."""
    if params is None:
        return []
    items = list(params.items() if isinstance(params, dict) else params)
    for item in items:
        if not (isinstance(item, tuple) and len(item) == 2 and isinstance(item[1], torch.Tensor)):
            raise TypeError(
                "params should map names to tensors: a dict such as {'w': w, 'b': b} "
                f"or model.named_parameters(); one entry was {item!r:.80}"
            )
    return [(str(n), t) for n, t in items]


def build_graph(tensor, params=None, name=None, max_nodes=200):
    """The backward graph of ``tensor`` as a ``Graph``.

    params: names for the leaf tensors, as a dict {name: tensor} or ``model.named_parameters()``.
    name: what to call ``tensor`` itself (e.g. "loss"), shown beside the root.
    max_nodes: a larger graph raises ValueError; no drawing of it would be readable.
    """
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"build_graph needs a torch.Tensor, not {type(tensor).__name__}.")
    names = {id(t): n for n, t in _named(params)}
    root = tensor.grad_fn
    if root is None:
        if tensor.requires_grad:  # a leaf: its graph is the tensor itself
            return Graph([Node("AccumulateGrad", names.get(id(tensor), name), tuple(tensor.shape))], root_name=name)
        raise ValueError(
            "This tensor has no autograd graph (its grad_fn is None): it was not computed from a tensor with "
            "requires_grad=True, or it was computed under torch.no_grad() or after .detach()."
        )
    index, nodes, edges, keep = {}, [], [], []

    def add(fn):
        if id(fn) in index:
            return index[id(fn)]
        if len(nodes) == max_nodes:
            raise ValueError(
                f"This graph has more than {max_nodes} backward functions, too many to draw readably. "
                "Draw a smaller computation (one layer, a few examples), or pass a larger max_nodes."
            )
        keep.append(fn)  # holding the Python object keeps id(fn) unique while we walk
        variable = getattr(fn, "variable", None)
        if variable is not None:
            node = Node("AccumulateGrad", names.get(id(variable)), tuple(variable.shape))
        else:
            node = Node(type(fn).__name__)
        index[id(fn)] = len(nodes)
        nodes.append(node)
        for next_fn, _ in fn.next_functions:
            if next_fn is not None:  # None: an input that needs no gradient (data, labels)
                edges.append((index[id(fn)], add(next_fn)))
        return index[id(fn)]

    add(root)
    return Graph(nodes, edges, root_name=name)


def text_tree(graph):
    """An indented tree of the graph; a node reached a second time is named, not expanded again."""
    lines, shown = [], set()

    def line(i, prefix, branch, child_prefix):
        node = graph.nodes[i]
        text = node.label()
        if node.op == "AccumulateGrad":
            text = f"AccumulateGrad → {text}"
        if i == 0 and graph.root_name:
            text = f"{graph.root_name}  ←  {text}"
        if i in shown and graph.inputs(i):
            lines.append(f"{prefix}{branch}{text}  (shared: expanded above)")
            return
        lines.append(f"{prefix}{branch}{text}")
        shown.add(i)
        children = graph.inputs(i)
        for k, j in enumerate(children):
            last = k == len(children) - 1
            line(j, prefix + child_prefix, "└── " if last else "├── ", "    " if last else "│   ")

    line(0, "", "", "")
    return "\n".join(lines)


def _layout(graph):
    """(x, y) of every node: one row per depth, each row ordered by where the nodes feeding it sit."""
    depths = graph.depths()
    rows = {}
    for i, d in enumerate(depths):
        rows.setdefault(d, []).append(i)
    pos = {}
    for d in sorted(rows):
        def barycentre(i):
            parents = [pos[a][0] for a, b in graph.edges if b == i and a in pos]
            return sum(parents) / len(parents) if parents else 0.0

        row = sorted(rows[d], key=lambda i: (barycentre(i), i))
        for k, i in enumerate(row):
            pos[i] = (k - (len(row) - 1) / 2, -d)
    return pos


def draw(graph, ax=None):
    """Draw the graph with matplotlib: root at the top, leaves below, arrows in the direction the gradient flows.

    Returns the Figure. Without ``ax`` the Figure is not registered with pyplot, so a notebook shows it once.
    """
    pos = _layout(graph)
    width = max(len([p for p in pos.values() if p[1] == y]) for y in {p[1] for p in pos.values()})
    height = 1 - min(p[1] for p in pos.values())
    if ax is None:
        fig = Figure(figsize=(max(4.0, 2.4 * width), 0.35 + 0.95 * height))
        ax = fig.add_subplot()
    boxes = {}
    for i, node in enumerate(graph.nodes):
        kind = "root" if i == 0 else ("param" if node.leaf else "leaf") if node.op == "AccumulateGrad" else "op"
        label = node.label()
        if i == 0 and graph.root_name:
            label = f"{graph.root_name}\n{label}"
        elif node.op == "AccumulateGrad":
            label = f"AccumulateGrad\n{label}"
        boxes[i] = ax.text(
            *pos[i], label, ha="center", va="center", fontsize=9, zorder=3,
            bbox=dict(boxstyle="round,pad=0.4", fc=COLORS[kind], ec="#555555"),
        )
    depths, drawn = graph.depths(), {}
    for a, b in graph.edges:  # drawn after the boxes so that each arrow is clipped at the box edges
        # An edge that skips rows, or repeats (x * x feeds x twice), bends so it does not hide another.
        repeat = drawn[a, b] = drawn.get((a, b), -1) + 1
        bend = 0.35 * repeat + (0.3 if depths[b] - depths[a] > 1 else 0.0)
        ax.annotate(
            "", xy=pos[b], xytext=pos[a], zorder=4,
            arrowprops=dict(arrowstyle="-|>", color="#333333", shrinkA=1, shrinkB=1,
                            connectionstyle=f"arc3,rad={bend}",
                            patchA=boxes[a].get_bbox_patch(), patchB=boxes[b].get_bbox_patch()),
        )
    xs = [p[0] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.8, max(xs) + 0.8)
    ax.set_ylim(-height + 0.5, 0.5)
    ax.axis("off")
    ax.set_title("backward graph: the gradient flows along the arrows", fontsize=10)
    return ax.figure


def _torchviz_drawing(tensor, params):
    """torchviz's drawing, or None when torchviz or Graphviz's `dot` program is missing."""
    try:
        from torchviz import make_dot
    except ImportError:
        return None
    if shutil.which("dot") is None:
        return None
    return make_dot(tensor, params=dict(params))


def show(tensor, params=None, name="loss"):
    """Display the autograd graph of ``tensor`` in a notebook: torchviz's drawing if it and Graphviz are
    installed, else a text tree and a matplotlib drawing. Returns None, so the drawing is shown once."""
    from IPython.display import display

    params = _named(params)
    drawing = _torchviz_drawing(tensor, params)
    if drawing is None:
        graph = build_graph(tensor, params, name)
        print(text_tree(graph))
        drawing = draw(graph)
    display(drawing)


# --------------------------------------------------------------------------- a backward pass with its mistake marked
#: fill, edge colour and hatch of a gradient's box, by its status in a gradlab.variants.Trace
STATUS_STYLE = {
    "right": ("#d3f9d8", "#2b8a3e", None),
    "wrong": ("#ffc9c9", "#c92a2a", None),
    "consequence": ("#ffe8cc", "#e8590c", "///"),
    "also wrong": ("#ffc9c9", "#862e9c", "xx"),
    "unclear": ("#fff3bf", "#e67700", None),
    "unknown": ("#f1f3f5", "#868e96", None),
}
STATUS_WORDS = {
    "right": "right", "wrong": "first wrong", "consequence": "wrong because of it", "also wrong": "also wrong",
    "unclear": "wrong, cause not shown", "unknown": "not given",
}


class BackwardDrawing:
    """A drawn backward pass: ``svg`` (text), ``png()`` (bytes), ``mimetype``; a notebook displays it, and
    ``to_html()`` is a self-contained fragment for a page such as nbgrader's feedback (no file, no network)."""

    mimetype = "image/svg+xml"

    def __init__(self, figure, title):
        self.figure = figure
        self.title = title
        self._svg = None

    @property
    def svg(self):
        if self._svg is None:
            import io

            import matplotlib

            buffer = io.StringIO()
            # Text stays text (searchable, readable by a screen reader); fixed ids and no date: the same
            # drawing gives the same bytes.
            with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "gradlab", "hatch.linewidth": 0.5}):
                self.figure.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
            self._svg = buffer.getvalue()
        return self._svg

    @property
    def data(self):
        return self.svg

    def png(self, dpi=100):
        import io

        import matplotlib

        buffer = io.BytesIO()
        with matplotlib.rc_context({"hatch.linewidth": 0.5}):
            self.figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
        return buffer.getvalue()

    def to_html(self):
        """The SVG inline in a <figure>, without its XML prolog, for embedding in an HTML page."""
        import html as _html

        svg = self.svg
        start = svg.find("<svg")
        return (f'<figure class="gradlab-backward" role="img" aria-label="{_html.escape(self.title)}">'
                f"{svg[start:]}</figure>")

    def _repr_svg_(self):
        return self.svg

    def _repr_html_(self):
        return self.to_html()


def draw_backward(trace, edges=None, title=None, width=None):
    """Draw a backward pass with every gradient marked: right ones green, the first wrong one red with its
    diagnosis, the ones wrong because of it orange (hatched), a second mistake purple, not given grey.

    trace: a gradlab.variants.Trace, or a list of nodes, each a dict (or object) with ``name``, ``label``,
      ``status`` (a key of STATUS_STYLE) and optionally ``note``; then ``edges`` lists (a, b) name pairs, the
      gradient flowing from a's gradient into b's. The first node is the loss.
    Needs only matplotlib. Returns a BackwardDrawing (SVG text, PNG bytes).
    """
    import textwrap

    nodes = list(getattr(trace, "nodes", trace))
    edges = list(getattr(trace, "edges", edges or []))
    title = title or getattr(trace, "title", None) or "backward pass"
    items = [_node_fields(n) for n in nodes]
    if not items:
        raise ValueError("draw_backward needs at least one node (the loss)")
    index = {item["name"]: i for i, item in enumerate(items)}
    unknown = [s for item in items for s in [item["status"]] if s not in STATUS_STYLE]
    if unknown:
        raise ValueError(f"unknown status {unknown[0]!r}; use one of {', '.join(STATUS_STYLE)}")
    pairs = [(index[a], index[b]) for a, b in edges if a in index and b in index]
    layout_graph = Graph(nodes=items, edges=pairs)
    pos = _layout(layout_graph)
    widest = max(len([p for p in pos.values() if p[1] == y]) for y in {p[1] for p in pos.values()})
    depth = 1 - min(p[1] for p in pos.values())
    notes = [item for item in items if item["note"] and item["status"] in ("wrong", "also wrong")]
    wrap = 70
    note_lines = sum(len(textwrap.wrap(f"{n['label']}: {n['note']}", wrap)) for n in notes)
    fig_width = width or max(6.0, 1.9 * widest)
    fig = Figure(figsize=(fig_width, 0.9 + 0.95 * depth + 0.22 * note_lines + 0.5))
    ax = fig.add_axes((0.02, 0.02 + (0.22 * note_lines + 0.45) / fig.get_figheight(), 0.96,
                       1 - (0.22 * note_lines + 0.45 + 0.45) / fig.get_figheight()))
    boxes = {}
    for i, item in enumerate(items):
        fill, edge, hatch = STATUS_STYLE[item["status"]]
        first = item["status"] == "wrong"
        boxes[i] = ax.text(
            *pos[i], item["label"], ha="center", va="center", fontsize=10, zorder=3,
            fontweight="bold" if first else "normal", gid=f"grad-{item['name']}",
            bbox=dict(boxstyle="round,pad=0.45", fc=fill, ec=edge, lw=2.4 if first else 1.2, hatch=hatch,
                      linestyle="--" if item["status"] == "unknown" else "-"),
        )
    for a, b in pairs:
        wrong = items[b]["status"] in ("wrong", "consequence", "also wrong", "unclear")
        ax.annotate("", xy=pos[b], xytext=pos[a], zorder=2,
                    arrowprops=dict(arrowstyle="-|>", color="#c92a2a" if wrong else "#495057", shrinkA=1, shrinkB=1,
                                    lw=1.4 if wrong else 1.0, patchA=boxes[a].get_bbox_patch(),
                                    patchB=boxes[b].get_bbox_patch()))
    xs = [p[0] for p in pos.values()]
    ax.set_xlim(min(xs) - 0.9, max(xs) + 0.9)
    ax.set_ylim(-depth + 0.5, 0.5)
    ax.axis("off")
    ax.set_title(title, fontsize=11)
    present = [s for s in STATUS_STYLE if any(item["status"] == s for item in items)]
    from matplotlib.patches import Patch

    handles = [Patch(facecolor=STATUS_STYLE[s][0], edgecolor=STATUS_STYLE[s][1], hatch=STATUS_STYLE[s][2],
                     label=STATUS_WORDS[s]) for s in present]
    fig.legend(handles=handles, loc="lower center", ncol=min(len(handles), 4), fontsize=8, frameon=False,
               bbox_to_anchor=(0.5, 0.0))
    y = (0.22 * note_lines + 0.35) / fig.get_figheight()
    for n in notes:
        for line in textwrap.wrap(f"{n['label']}: {n['note']}", wrap):
            fig.text(0.03, y, line, fontsize=8.5, color=STATUS_STYLE[n["status"]][1], va="top", gid=f"note-{n['name']}")
            y -= 0.22 / fig.get_figheight()
    return BackwardDrawing(fig, title)


def _node_fields(node):
    get = node.get if isinstance(node, dict) else (lambda k, d=None: getattr(node, k, d))
    name = get("name")
    if name is None:
        raise ValueError("every node needs a name")
    return {"name": str(name), "label": str(get("label", name) or name), "status": get("status", "unknown"),
            "note": get("note", "") or ""}
