"""gem.taxonomy.match_clusters, the two-tier matching, on arrays alone (no SQLite): properties of the
decisions that ``Taxonomy.sync_run`` writes (tests/test_taxonomy.py checks the writes)."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gem.taxonomy import MIN_COSINE, KnownTopic, match_clusters, member_sketch


def _unit(rng, k: int, d: int = 16) -> np.ndarray:
    M = rng.standard_normal((k, d))
    return M / np.linalg.norm(M, axis=1, keepdims=True)


def _at_cosine(v: np.ndarray, cos: float, rng) -> np.ndarray:
    """A unit vector at exactly ``cos`` to unit ``v``."""
    w = rng.standard_normal(v.shape)
    w -= (w @ v) * v
    w /= np.linalg.norm(w)
    return cos * v + np.sqrt(1 - cos**2) * w


def _members(k: int, n: int = 40) -> list[list[str]]:
    return [[f"c{c}-d{i}" for i in range(n)] for c in range(k)]


def _topics(M, members=None, status="active", start=1) -> list[KnownTopic]:
    return [KnownTopic(f"T{start + i:03d}", status, M[i], None if members is None else member_sketch(members[i]))
            for i in range(len(M))]


@pytest.mark.parametrize("seed", range(5))
def test_identical_directions_and_members_match_one_to_one(seed):
    rng = np.random.default_rng(seed)
    M, members = _unit(rng, 8), _members(8)
    topics = _topics(M, members)
    out = match_clusters(M, [member_sketch(m) for m in members], topics)
    assert out.matched == {c: f"T{c + 1:03d}" for c in range(8)}
    assert not out.revived and not out.new and not out.retired and not out.via and not out.changed
    assert all(abs(out.cosine[c] - 1.0) < 1e-9 for c in range(8))
    assert out.jaccard == {c: 1.0 for c in range(8)}


@pytest.mark.parametrize("seed", range(5))
def test_a_cluster_below_the_cosine_floor_is_never_matched(seed):
    rng = np.random.default_rng(seed)
    M = _unit(rng, 4)
    topics = _topics(M) + _topics(M[:1], status="retired", start=10)
    far = _at_cosine(M[0], MIN_COSINE - 0.05, rng)
    # the far cluster's best pair is below the floor with every topic (live and retired)
    assert (np.stack([t.direction for t in topics]) @ far).max() < MIN_COSINE
    out = match_clusters(np.vstack([far[None], M[1:]]), None, topics)
    assert out.new == [0] and 0 not in out.mapping
    assert out.matched == {1: "T002", 2: "T003", 3: "T004"} and out.retired == ["T001"]
    # a looser floor lets the same pair through, flagged as changed (below the strict cosine)
    loose = match_clusters(np.vstack([far[None], M[1:]]), None, topics, min_cosine=MIN_COSINE - 0.1)
    assert loose.matched[0] == "T001" and loose.changed == [0] and not loose.new


def test_members_below_the_jaccard_floor_are_refused_whatever_the_cosine():
    rng = np.random.default_rng(0)
    M, members = _unit(rng, 3), _members(3)
    others = [[f"other-{i}" for i in range(40)]] + members[1:]  # cluster 0: same direction, other documents
    out = match_clusters(M, [member_sketch(m) for m in others], _topics(M, members))
    assert out.new == [0] and out.retired == ["T001"] and out.matched == {1: "T002", 2: "T003"}
    # without members on either side the direction alone decides
    assert match_clusters(M, None, _topics(M, members)).matched == {0: "T001", 1: "T002", 2: "T003"}


def test_a_retired_topic_is_revived_only_in_pass_two():
    rng = np.random.default_rng(1)
    v, u = _unit(rng, 2)
    live = KnownTopic("T001", "active", _at_cosine(v, 0.8, rng))
    retired_v = KnownTopic("T002", "retired", v.copy())  # a perfect fit for cluster 0 ...
    retired_u = KnownTopic("T003", "retired", u.copy())
    out = match_clusters(np.stack([v, u]), None, [retired_v, live, retired_u])
    # ... but the live topic takes cluster 0 in pass 1; only the cluster left over revives (pass 2)
    assert out.matched == {0: "T001"} and out.revived == {1: "T003"}
    assert out.changed == [0] and out.retired == [] and not out.new
    # with no live topic admissible, pass 2 revives the best retired one
    alone = match_clusters(np.stack([v, u]), None, [retired_v, retired_u])
    assert alone.revived == {0: "T002", 1: "T003"} and not alone.matched


def test_a_merged_topic_matches_with_the_live_ones_and_maps_to_its_survivor():
    rng = np.random.default_rng(2)
    M = _unit(rng, 2)
    topics = [KnownTopic("T001", "active", M[0]), KnownTopic("T002", "retired", M[1], merged_into="T001")]
    out = match_clusters(M, None, topics)
    assert out.matched == {0: "T001", 1: "T001"} and out.via == {1: "T002"} and not out.revived


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), k=st.integers(1, 10), n_live=st.integers(0, 10), n_retired=st.integers(0, 4),
       with_members=st.booleans())
def test_a_permutation_of_the_clusters_permutes_the_mapping(seed, k, n_live, n_retired, with_members):
    rng = np.random.default_rng(seed)
    M = _unit(rng, k, d=6)
    # topics near some clusters (cosine ~0.9-1), others anywhere
    near = [_at_cosine(M[rng.integers(k)], rng.uniform(0.5, 1.0), rng) for _ in range(n_live + n_retired)]
    members = _members(k, 20)
    topics = [KnownTopic(f"T{i + 1:03d}", "active" if i < n_live else "retired", near[i],
                         member_sketch(members[rng.integers(k)][: rng.integers(5, 21)]) if with_members else None)
              for i in range(n_live + n_retired)]
    sketches = [member_sketch(m) for m in members] if with_members else None
    perm = rng.permutation(k)
    base = match_clusters(M, sketches, topics)
    moved = match_clusters(M[perm], None if sketches is None else [sketches[p] for p in perm], topics)
    assert moved.matched == {i: base.matched[p] for i, p in enumerate(perm) if p in base.matched}
    assert moved.revived == {i: base.revived[p] for i, p in enumerate(perm) if p in base.revived}
    assert sorted(perm[moved.new].tolist()) == base.new
    assert sorted(perm[moved.changed].tolist()) == base.changed
    assert moved.retired == base.retired
    for i, p in enumerate(perm):
        if p in base.cosine:
            assert moved.cosine[i] == pytest.approx(base.cosine[p], abs=1e-12)
    # every cluster has one outcome, no topic takes two clusters directly
    assert sorted([*base.matched, *base.revived, *base.new]) == list(range(k))
    direct = list(base.matched.values()) + list(base.revived.values())
    assert len(direct) == len(set(direct))


def test_inputs_are_checked():
    M = np.eye(3)
    with pytest.raises(ValueError, match="sketches has 2 entries for 3 clusters"):
        match_clusters(M, [member_sketch(["a"])] * 2, [])
    with pytest.raises(ValueError, match="topic T001 has a direction of shape"):
        match_clusters(M, None, [KnownTopic("T001", "active", np.ones(4))])
    out = match_clusters(M, None, [])  # an empty taxonomy: every cluster is new
    assert out.new == [0, 1, 2] and not out.mapping
