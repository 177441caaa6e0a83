"""ByteTracker: one ID per object across frames, through misses and weak detections."""

import numpy as np

from utils.inference.tracking import ByteTracker


def _frame(objects):
    """objects: (x, y, class_id, score) of 30x30 boxes."""
    boxes = np.array([[x, y, x + 30, y + 30] for x, y, _, _ in objects], float).reshape(-1, 4)
    return boxes, np.array([s for *_, s in objects], float), np.array([c for _, _, c, _ in objects], int)


def test_two_moving_objects_keep_their_ids_through_a_miss_and_a_weak_frame():
    tracker = ByteTracker()
    seen = []
    for k in range(25):
        car = (10 + 6 * k, 20, 0, 0.9)
        person = (300 - 5 * k, 120, 1, 0.3 if k == 8 else 0.85)  # occluded at frame 8: a weak detection
        objects = [car] if k == 14 else [car, person]  # person missed entirely at frame 14
        seen.append({t.class_id: t.track_id for t in tracker.update(*_frame(objects))})
    assert {ids.get(0) for ids in seen} == {1}
    assert {ids.get(1) for ids in seen if 1 in ids} == {2}
    assert 1 not in seen[14] and seen[8][1] == 2  # the weak detection kept the track, the miss did not report it


def test_weak_detections_start_nothing_and_new_objects_get_new_ids():
    tracker = ByteTracker()
    assert tracker.update(*_frame([(0, 0, 0, 0.2)])) == []
    [first] = tracker.update(*_frame([(0, 0, 0, 0.9)]))
    tracks = tracker.update(*_frame([(2, 0, 0, 0.9), (200, 200, 0, 0.9)]))
    assert [t.track_id for t in tracks] == [first.track_id, first.track_id + 1]


def test_other_classes_do_not_steal_a_track_and_lost_tracks_expire():
    tracker = ByteTracker(max_lost=2)
    [cat] = tracker.update(*_frame([(50, 50, 0, 0.9)]))
    [dog] = tracker.update(*_frame([(50, 50, 1, 0.9)]))  # same place, other class: a new object
    assert dog.track_id != cat.track_id
    for _ in range(3):
        tracker.update(*_frame([]))
    [again] = tracker.update(*_frame([(50, 50, 0, 0.9)]))
    assert again.track_id not in (cat.track_id, dog.track_id)  # the cat's track had expired
