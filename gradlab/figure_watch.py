"""A hidden widget that reports from the browser whether an explorer's figure shows a picture.

Its view looks at the pixels of the figure beside it (``.gradlab-figure`` in the same
``.gradlab-explorer``: ipympl's canvas, or the ``<img>`` of the non-widget backend) every 250 ms while
the figure is on the page and blank, every second once it is drawn. The kernel counts the pictures it
sends in ``pictures``. The view sends ``{"drawn": true}`` when the figure first shows a picture, and
``{"drawn": false}`` when it is still blank 1.5 s after the latest picture was sent (10 s after it was
shown, if none was sent), then again after twice as long, up to 6 times. The kernel answers a blank
report by sending the figure again, whole (``redraw``). So a figure whose picture is merely slow to come
is not reported, and a report means a picture was lost or came blank. A figure that is not on the page
(a hidden tab, no view) is not judged.
"""
import anywidget
import ipywidgets as widgets
import traitlets

_ESM = r"""
const INK = 0.005;  // drawn: more than 0.5 % of the pixels are opaque and not near-white
const AFTER_PICTURE_MS = 1500;
const WITHOUT_PICTURE_MS = 10000;
const REPORTS = 6;

function pixels(figure) {
  const canvas = figure.querySelector("canvas");  // ipympl: the picture (the second canvas is an overlay)
  if (canvas) {
    if (!canvas.width || !canvas.height) return null;
    return canvas.getContext("2d").getImageData(0, 0, canvas.width, canvas.height).data;
  }
  const img = figure.tagName === "IMG" ? figure : figure.querySelector("img");
  if (!img || !img.complete || !img.naturalWidth) return null;
  const copy = document.createElement("canvas");
  copy.width = img.naturalWidth;
  copy.height = img.naturalHeight;
  const context = copy.getContext("2d");
  context.drawImage(img, 0, 0);
  return context.getImageData(0, 0, copy.width, copy.height).data;
}

function isDrawn(figure) {
  const data = pixels(figure);
  if (!data) return false;
  let ink = 0;
  let seen = 0;
  for (let i = 0; i < data.length; i += 16, seen++) {
    if (data[i + 3] > 128 && Math.min(data[i], data[i + 1], data[i + 2]) < 230) ink++;
  }
  return ink > INK * seen;
}

function render({ model, el }) {
  let blankSince = null;
  let pictureSince = Date.now();
  let reports = 0;
  let saidDrawn = false;
  let timer = null;
  const onPicture = () => {
    pictureSince = Date.now();
  };
  model.on("change:pictures", onPicture);
  const check = () => {
    const figure = el.closest(".gradlab-explorer")?.querySelector(".gradlab-figure");
    if (!figure || figure.getClientRects().length === 0) return 250;
    const now = Date.now();
    if (isDrawn(figure)) {
      if (!saidDrawn) {
        model.send({ drawn: true, blank_ms: blankSince === null ? 0 : now - blankSince, pictures: model.get("pictures") });
      }
      saidDrawn = true;
      blankSince = null;
      reports = 0;
      return 1000;
    }
    if (blankSince === null) blankSince = now;
    const pictures = model.get("pictures");
    const waited = pictures > 0 ? now - Math.max(pictureSince, blankSince) : now - blankSince;
    const due = (pictures > 0 ? AFTER_PICTURE_MS : WITHOUT_PICTURE_MS) * 2 ** reports;
    if (reports < REPORTS && waited >= due) {
      model.send({ drawn: false, blank_ms: now - blankSince, pictures });
      saidDrawn = false;
      reports++;
    }
    return 250;
  };
  const loop = () => {
    timer = setTimeout(loop, check());
  };
  loop();
  return () => {
    clearTimeout(timer);
    model.off("change:pictures", onPicture);
  };
}

export default { render };
"""


class FigureWatch(anywidget.AnyWidget):
    """Calls ``redraw()`` whenever the browser reports the explorer's figure blank.

    Call ``picture_sent()`` for every picture of the figure sent to the browser. ``drawn``: the last
    report (None before the first); ``redraws``: how many blank reports were answered; ``reports``: every
    report received, as sent (``{"drawn": ..., "blank_ms": ..., "pictures": ...}``).
    """

    _esm = _ESM
    pictures = traitlets.Int(0).tag(sync=True)

    def __init__(self, redraw):
        super().__init__(layout=widgets.Layout(display="none"))
        self.add_class("gradlab-figure-watch")
        self._redraw = redraw
        self.drawn = None
        self.redraws = 0
        self.reports = []
        self.on_msg(self._on_report)

    def picture_sent(self):
        self.pictures += 1

    def _on_report(self, _widget, content, _buffers):
        self.reports.append(content)
        self.drawn = bool(content.get("drawn"))
        if not self.drawn:
            self.redraws += 1
            self._redraw()
