"""The curators' taxonomy: topics with stable ids, persisted in SQLite, surviving re-fits.

Modules: ``db`` (schema and versions, connection, errors, audit, settings), ``matching`` (member
sketches, MinHash Jaccard, the two-tier matching that syncs a run in; its docstring has the rule and
its calibration), ``io`` (JSON export / import), ``core`` (the ``Taxonomy`` class: groups, curator
edits, queries), ``regroup`` (merge and split topics, each document's stable id). Every name other
modules use is importable from ``gem.taxonomy``.

The taxonomy works on arrays and its database, never on run folders: joining a saved run to it
(syncing a run, each document's stable id in a run, a split previewed on a run's documents) is
``gem.workspace_ops``.
"""
from gem.taxonomy.core import Taxonomy
from gem.taxonomy.db import (EDITABLE_FIELDS, MAX_TEXT, REVIEW_STATES, SCHEMA_VERSION, STATUSES, StaleEditError,
                             TaxonomyError)
from gem.taxonomy.io import EXPORT_FORMAT, EXPORT_VERSION
from gem.taxonomy.matching import (MIN_COSINE, MIN_JACCARD, SKETCH_SIZE, STRICT_COSINE, STRICT_JACCARD, KnownTopic,
                                   Matching, SyncReport, hash_ids, match_clusters, member_sketch, sketch_jaccard)
from gem.taxonomy.regroup import (MAX_SPLIT_K, MIN_SPLIT_K, SplitProposal, TopicRouter, check_split_k, propose_split,
                                  topic_rows)

__all__ = [
    "EDITABLE_FIELDS", "EXPORT_FORMAT", "EXPORT_VERSION", "MAX_SPLIT_K", "MAX_TEXT", "MIN_COSINE", "MIN_JACCARD",
    "MIN_SPLIT_K", "REVIEW_STATES", "SCHEMA_VERSION", "SKETCH_SIZE", "STATUSES", "STRICT_COSINE", "STRICT_JACCARD",
    "KnownTopic", "Matching", "SplitProposal", "StaleEditError", "SyncReport", "Taxonomy", "TaxonomyError",
    "TopicRouter", "check_split_k", "hash_ids", "match_clusters", "member_sketch", "propose_split", "sketch_jaccard",
    "topic_rows",
]

# moved to gem.workspace_ops (they open run folders, which the taxonomy never does); the old names
# still resolve here, on first use, for callers outside the package. No gem module uses them.
MOVED = ("document_topic_ids", "run_document_topics", "sync_saved_run")


def __getattr__(name):
    if name in MOVED:
        from gem import workspace_ops

        return getattr(workspace_ops, name)
    raise AttributeError(f"module 'gem.taxonomy' has no attribute {name!r}")
