"""Object IDs across video frames: a small ByteTrack-style tracker (Zhang et al., 2022).

Per frame, with the detector's boxes (pixel xyxy) and scores:

1. every live track predicts its box with a constant-velocity Kalman filter on (cx, cy, w, h);
2. detections scoring at least `high_score` are matched to the tracks by IoU (same class only,
   best pairs first, IoU >= `match_iou`);
3. the tracks left over get a second chance with the low-score detections (`low_score` up to
   `high_score`): ByteTrack's point, that an occluded or blurred object still gives a weak
   detection that keeps its track alive, while on its own such a detection starts nothing;
4. a high-score detection that matched nothing starts a new track; a track that matched nothing
   for `max_lost` frames is dropped.

Only tracks that have matched in this frame are reported, with their ID and the detection's box.
Matching is greedy on IoU (highest first): with a handful of objects per frame it gives the
Hungarian result in practice and needs no extra package. IoU is `utils.boxes.box_iou`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from utils.boxes import box_iou, convert_format


@dataclass
class Track:
    """A tracked object: `track_id` (from 1), `class_id`, its last `box` (pixel xyxy) and `score`."""

    track_id: int
    class_id: int
    box: np.ndarray
    score: float
    lost: int = 0  # frames since it last matched
    state: np.ndarray = field(default=None, repr=False)  # (8,) cx, cy, w, h and their velocities
    covariance: np.ndarray = field(default=None, repr=False)


class _ConstantVelocity:
    """Kalman filter on (cx, cy, w, h, vcx, vcy, vw, vh); noise scaled by the box size (as SORT / ByteTrack)."""

    def __init__(self):
        self.transition = np.eye(8)
        self.transition[:4, 4:] = np.eye(4)
        self.observation = np.eye(4, 8)

    @staticmethod
    def _scale(state: np.ndarray) -> np.ndarray:
        size = max(float(state[3]), 1.0)
        return np.array([size, size, size, size])

    def initiate(self, measurement: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        state = np.concatenate([measurement, np.zeros(4)])
        std = np.concatenate([0.1 * self._scale(state), 0.05 * self._scale(state)])
        return state, np.diag(std**2)

    def predict(self, state, covariance):
        std = np.concatenate([0.05 * self._scale(state), 0.01 * self._scale(state)])
        state = self.transition @ state
        covariance = self.transition @ covariance @ self.transition.T + np.diag(std**2)
        return state, covariance

    def update(self, state, covariance, measurement):
        noise = np.diag((0.05 * self._scale(state)) ** 2)
        projected = self.observation @ covariance @ self.observation.T + noise
        gain = covariance @ self.observation.T @ np.linalg.inv(projected)
        state = state + gain @ (measurement - self.observation @ state)
        covariance = (np.eye(8) - gain @ self.observation) @ covariance
        return state, covariance


def _greedy_match(iou: np.ndarray, threshold: float) -> list[tuple[int, int]]:
    """(row, col) pairs, highest IoU first, each row and column at most once, IoU >= threshold."""
    pairs = []
    if iou.size == 0:
        return pairs
    order = np.argsort(-iou, axis=None)
    used_rows, used_cols = set(), set()
    for flat in order:
        row, col = divmod(int(flat), iou.shape[1])
        if iou[row, col] < threshold:
            break
        if row in used_rows or col in used_cols:
            continue
        pairs.append((row, col))
        used_rows.add(row)
        used_cols.add(col)
    return pairs


class ByteTracker:
    """Keeps object IDs across the frames of one video.

    Args:
        high_score: detections at least this confident are matched first and may start tracks.
        low_score: detections between this and `high_score` only keep existing tracks alive.
        match_iou: least IoU between a track's predicted box and a detection to match them.
        max_lost: frames a track may go unmatched before it is dropped.
    """

    def __init__(self, high_score: float = 0.5, low_score: float = 0.1, match_iou: float = 0.3, max_lost: int = 30):
        self.high_score, self.low_score = float(high_score), float(low_score)
        self.match_iou, self.max_lost = float(match_iou), int(max_lost)
        self.tracks: list[Track] = []
        self._next_id = 1
        self._filter = _ConstantVelocity()

    def update(self, boxes: np.ndarray, scores: np.ndarray, class_ids: np.ndarray) -> list[Track]:
        """Feed one frame's detections; returns the tracks matched in this frame.

        boxes: (N, 4) pixel xyxy; scores: (N,); class_ids: (N,).
        """
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        class_ids = np.asarray(class_ids, np.int64).reshape(-1)
        for track in self.tracks:
            track.state, track.covariance = self._filter.predict(track.state, track.covariance)

        high = np.flatnonzero(scores >= self.high_score)
        low = np.flatnonzero((scores >= self.low_score) & (scores < self.high_score))
        matched: list[Track] = []
        waiting = list(self.tracks)  # tracks not matched yet in this frame
        new_candidates: list[int] = []
        for candidates in (high, low):
            pairs = self._match(waiting, boxes[candidates], class_ids[candidates])
            for t, d in pairs:
                self._correct(waiting[t], boxes[candidates[d]], scores[candidates[d]])
                matched.append(waiting[t])
            used = {d for _, d in pairs}
            if candidates is high:  # ByteTrack: only confident detections start tracks
                new_candidates = [int(candidates[d]) for d in range(len(candidates)) if d not in used]
            taken = {t for t, _ in pairs}
            waiting = [track for t, track in enumerate(waiting) if t not in taken]

        for track in waiting:
            track.lost += 1
        self.tracks = [track for track in self.tracks if track.lost <= self.max_lost]
        for det in new_candidates:
            state, covariance = self._filter.initiate(convert_format(boxes[det][None], "xyxy", "center_xywh")[0])
            track = Track(self._next_id, int(class_ids[det]), boxes[det].copy(), float(scores[det]))
            track.state, track.covariance = state, covariance
            self._next_id += 1
            self.tracks.append(track)
            matched.append(track)
        return sorted(matched, key=lambda track: track.track_id)

    def _correct(self, track: Track, box: np.ndarray, score: float) -> None:
        measurement = convert_format(box[None], "xyxy", "center_xywh")[0]
        track.state, track.covariance = self._filter.update(track.state, track.covariance, measurement)
        track.box, track.score, track.lost = box.copy(), float(score), 0

    def _match(self, tracks: list[Track], boxes: np.ndarray, class_ids: np.ndarray) -> list[tuple[int, int]]:
        if not tracks or not len(boxes):
            return []
        predicted = convert_format(np.stack([t.state[:4] for t in tracks]), "center_xywh", "xyxy")
        iou = box_iou(predicted, boxes)
        same_class = np.array([t.class_id for t in tracks])[:, None] == class_ids[None, :]
        return _greedy_match(np.where(same_class, iou, 0.0), self.match_iou)
