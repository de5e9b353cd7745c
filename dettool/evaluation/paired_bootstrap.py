"""How uncertain a COCO AP (or AR) difference between two result sets on the same images is.

A paired bootstrap over images: draw the evaluated images with replacement, score both result
sets on the same draw, keep the difference; the 2.5th and 97.5th percentiles of the differences
are the 95% interval. An image drawn twice counts as two images (its ground truth and its
detections twice), exactly as a COCO evaluation of a data set holding that image twice.

It is fast because pycocotools' ``COCOeval.evaluate()`` (which matches detections to ground
truth per image and category, the expensive step) runs once per result set: ``ImageMatches``
keeps its per-image outcome (score, matched, ignored per IoU threshold; non-ignored gt count),
and each resample redoes only the accumulation (pool the drawn images' detections per category,
sort by score, cumulate TP / FP, interpolate precision at the 101 recall points), vectorised,
with the same tie order, epsilon and recall interpolation as ``COCOeval.accumulate()``. Area
range 'all' only, like the AP and AR@N that the parity checks use.

Two result sets whose matches agree on every image give a zero-width interval: the draw does
not matter when nothing differs. The interval speaks for the images evaluated (and for images
like them), not for differences that none of them shows.
"""
from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass

import numpy as np
from pycocotools.cocoeval import COCOeval


class ImageMatches:
    """The per-image outcome of ``COCOeval.evaluate()`` (area 'all'), ready to re-accumulate.

    Per category ``k`` (``K`` in all) the detections of every image are stored back to back,
    image by image, each image's sorted by descending score and cut at ``maxDets[-1]``:
    ``scores[k]`` ``[N_k]``, ``matched[k]`` / ``ignored[k]`` bool ``[T, N_k]`` (``T`` IoU
    thresholds), ``rank[k]`` ``[N_k]`` (position in its image); ``start[k]`` / ``count[k]``
    ``[I]`` locate image ``i``'s run; ``num_gt`` ``[K, I]`` counts non-ignored ground truth.
    """

    def __init__(self, ev: COCOeval) -> None:
        """``ev``: a ``COCOeval`` after ``evaluate()``."""
        p = ev.params
        self.image_ids = list(p.imgIds)
        self.rec_thrs = np.asarray(p.recThrs, dtype=float)
        num_images, num_areas = len(p.imgIds), len(p.areaRng)
        num_cats = len(p.catIds) if p.useCats else 1
        num_thrs = len(p.iouThrs)
        area_all = p.areaRngLbl.index("all")
        self.scores, self.matched, self.ignored, self.rank, self.start, self.count = [], [], [], [], [], []
        self.num_gt = np.zeros((num_cats, num_images), dtype=np.int64)
        for k in range(num_cats):
            scores, matched, ignored, rank = [], [], [], []
            count = np.zeros(num_images, dtype=np.int64)
            for i in range(num_images):
                e = ev.evalImgs[k * num_areas * num_images + area_all * num_images + i]
                if e is None:
                    continue
                self.num_gt[k, i] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
                count[i] = len(e["dtScores"])
                scores.append(np.asarray(e["dtScores"], dtype=float))
                matched.append(np.asarray(e["dtMatches"]).reshape(num_thrs, -1) > 0)
                ignored.append(np.asarray(e["dtIgnore"]).reshape(num_thrs, -1).astype(bool))
                rank.append(np.arange(count[i]))
            self.scores.append(np.concatenate(scores) if scores else np.zeros(0))
            self.matched.append(np.concatenate(matched, 1) if matched else np.zeros((num_thrs, 0), bool))
            self.ignored.append(np.concatenate(ignored, 1) if ignored else np.zeros((num_thrs, 0), bool))
            self.rank.append(np.concatenate(rank) if rank else np.zeros(0, dtype=np.int64))
            self.start.append(np.cumsum(count) - count)
            self.count.append(count)
        # what each resample reads: negated scores (argsort ascending) and TP / FP of the non-ignored
        # detections as float (a float cumsum is twice as fast as one over bools)
        self.neg_scores = [-s for s in self.scores]
        self.true_pos = [(m & ~g).astype(float) for m, g in zip(self.matched, self.ignored)]
        self.false_pos = [(~m & ~g).astype(float) for m, g in zip(self.matched, self.ignored)]

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    def _gather(self, k: int, images: np.ndarray) -> np.ndarray:
        """Indices of category ``k``'s detections of ``images`` (``[n]`` positions, repeats kept), in order."""
        lens = self.count[k][images]
        offsets = np.cumsum(lens) - lens
        return np.arange(lens.sum()) - np.repeat(offsets, lens) + np.repeat(self.start[k][images], lens)

    def average_precision(self, images: np.ndarray | None = None) -> float:
        """COCO AP@[.50:.95] (area all, ``maxDets[-1]`` per image) of the images at positions
        ``images`` (int ``[n]``, repeats allowed; default all): ``COCOeval``'s ``stats[0]``, 0 for -1."""
        images = np.arange(self.num_images) if images is None else np.asarray(images)
        total, cells = 0.0, 0
        for k in range(len(self.scores)):
            num_gt = int(self.num_gt[k, images].sum())
            if num_gt == 0:
                continue  # no ground truth of this class drawn: the class does not count (-1)
            sel = self._gather(k, images)
            sel = sel[np.argsort(self.neg_scores[k][sel], kind="stable")]  # COCOeval's mergesort of -score
            tp = np.cumsum(self.true_pos[k][:, sel], axis=1)
            fp = np.cumsum(self.false_pos[k][:, sel], axis=1)
            cells += tp.shape[0] * len(self.rec_thrs)
            if tp.shape[1] == 0:
                continue  # precision 0 at every recall
            recall = tp / num_gt
            precision = tp / (tp + fp + np.spacing(1))
            precision = np.maximum.accumulate(precision[:, ::-1], axis=1)[:, ::-1]  # monotone envelope
            for t in range(tp.shape[0]):
                inds = np.searchsorted(recall[t], self.rec_thrs, side="left")
                total += precision[t, inds[inds < tp.shape[1]]].sum()  # recall never reached: 0
        return total / cells if cells else 0.0

    def average_recall(self, max_det: int, images: np.ndarray | None = None) -> float:
        """Recall averaged over IoU thresholds (area all) with the first ``max_det`` detections of
        each image: ``proposal_recall``'s ``AR@<max_det>`` of the images at positions ``images``."""
        images = np.arange(self.num_images) if images is None else np.asarray(images)
        recalls = []
        for k in range(len(self.scores)):
            num_gt = int(self.num_gt[k, images].sum())
            if num_gt == 0:
                continue
            sel = self._gather(k, images)
            sel = sel[self.rank[k][sel] < max_det]
            hits = (self.matched[k][:, sel] & ~self.ignored[k][:, sel]).sum(1)
            recalls += (hits / num_gt).tolist()
        return float(np.mean(recalls)) if recalls else 0.0


def image_matches(ev: COCOeval) -> ImageMatches:
    """Run ``ev.evaluate()`` (silently) for area 'all' only (a quarter of the work) and keep its
    per-image outcome; ``ev`` is left evaluated for that one area range."""
    p = ev.params
    area_all = p.areaRngLbl.index("all")
    p.areaRng, p.areaRngLbl = [p.areaRng[area_all]], ["all"]
    with contextlib.redirect_stdout(io.StringIO()):
        ev.evaluate()
    return ImageMatches(ev)


@dataclass(frozen=True)
class BootstrapInterval:
    """A difference ``b - a`` of a metric and its bootstrap percentile interval.

    Attributes:
        delta: the difference on the evaluated images themselves.
        low, high: the ``confidence`` percentile interval of the resampled differences.
        num_images: images resampled (each draw has as many).
        num_resamples: resamples drawn.
        confidence: e.g. 0.95.
        seed: of the resampling.
    """

    delta: float
    low: float
    high: float
    num_images: int
    num_resamples: int
    confidence: float
    seed: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2


def paired_bootstrap(a: ImageMatches, b: ImageMatches, metric, num_resamples: int = 500,
                     confidence: float = 0.95, seed: int = 0) -> BootstrapInterval:
    """The difference ``metric(b) - metric(a)`` and its paired-bootstrap interval.

    Args:
        a, b: the two result sets (e.g. PyTorch and engine), evaluated on the same images.
        metric: ``(ImageMatches, images int [n]) -> float``, e.g.
            ``lambda m, i: m.average_precision(i)``.
        num_resamples: draws of ``n`` image positions with replacement (one seeded generator, so
            the interval is reproducible); 0 gives the zero-width interval at ``delta``.
        confidence: the interval's coverage (central percentiles).
        seed: of the generator.
    """
    if a.image_ids != b.image_ids:
        raise ValueError("paired bootstrap of evaluations on different images")
    n = a.num_images
    everything = np.arange(n)
    delta = metric(b, everything) - metric(a, everything)
    if n == 0 or num_resamples == 0:
        return BootstrapInterval(delta, delta, delta, n, 0, confidence, seed)
    rng = np.random.default_rng(seed)
    diffs = np.empty(num_resamples)
    for r in range(num_resamples):
        images = rng.integers(0, n, n)
        diffs[r] = metric(b, images) - metric(a, images)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(diffs, [tail, 100 - tail])
    return BootstrapInterval(float(delta), float(low), float(high), n, num_resamples, confidence, seed)
