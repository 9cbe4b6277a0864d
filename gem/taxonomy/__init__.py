"""The curators' taxonomy: topics with stable ids, persisted in SQLite, surviving re-fits.

Modules: ``db`` (schema and versions, connection, errors, audit, settings), ``matching`` (member
sketches, MinHash Jaccard, the two-tier matching that syncs a run in; its docstring has the rule and
its calibration), ``io`` (JSON export / import), ``core`` (the ``Taxonomy`` class: groups, curator
edits, queries), ``regroup`` (merge and split topics, each document's stable id). Every name other
modules use is importable from ``gem.taxonomy``.
"""
from gem.taxonomy.core import Taxonomy
from gem.taxonomy.db import (EDITABLE_FIELDS, MAX_TEXT, REVIEW_STATES, SCHEMA_VERSION, STATUSES, StaleEditError,
                             TaxonomyError)
from gem.taxonomy.io import EXPORT_FORMAT, EXPORT_VERSION
from gem.taxonomy.matching import (MIN_COSINE, MIN_JACCARD, SKETCH_SIZE, STRICT_COSINE, STRICT_JACCARD, SyncReport,
                                   hash_ids, member_sketch, sketch_jaccard, sync_saved_run)
from gem.taxonomy.regroup import (MAX_SPLIT_K, MIN_SPLIT_K, SplitProposal, TopicRouter, document_topic_ids,
                                  run_document_topics, topic_rows)

__all__ = [
    "EDITABLE_FIELDS", "EXPORT_FORMAT", "EXPORT_VERSION", "MAX_SPLIT_K", "MAX_TEXT", "MIN_COSINE", "MIN_JACCARD",
    "MIN_SPLIT_K", "REVIEW_STATES", "SCHEMA_VERSION", "SKETCH_SIZE", "STATUSES", "STRICT_COSINE", "STRICT_JACCARD",
    "SplitProposal", "StaleEditError", "SyncReport", "Taxonomy", "TaxonomyError", "TopicRouter", "document_topic_ids",
    "hash_ids", "member_sketch", "run_document_topics", "sketch_jaccard", "sync_saved_run", "topic_rows",
]
