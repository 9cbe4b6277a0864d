"""Mixture weights per domain, and the export bundle that trainers read directly.

A *domain* is a non-excluded topic (or a parent topic when mixing at parent level). The strategies
fill each domain's ``weight`` and ``weight_source``:

- natural      token share n_i / sum n
- balanced     the fitted GEM mass per topic (given as input), renormalised
- temperature  p_i ~ n_i^(1/T)  (T = 1 is natural, T -> inf is uniform)
- unimax       Chung et al. 2023: a uniform token budget per domain, each capped at
               max_epochs x n_i, the leftover spread over the uncapped ones (smallest first);
               it needs a token budget
- imported     weights learned elsewhere (DoReMi domain-weights JSON, RegMix YAML / CSV)
- manual       overrides {domain: weight}; the rest keep the base strategy's proportions

Excluded domains always get weight 0 and are left out of every trainer format. Weights sum to 1
(checked to 1e-12). Under a token budget each domain's implied epochs is weight x budget /
n_tokens; the domains that would need more than ``max_epochs`` are reported in one summary
warning in ``Mixture.warnings`` (their count and the worst ones).

The package, one module per seam (everything is re-exported here: ``from gem import mixture as mx``):

- ``weights``     the domain table, the strategies, ``Mixture`` and ``build_mixture``
- ``formats``     ``mixture.json`` and each trainer format's renderer / parser, importers, strict JSON
- ``bundle``      ``write_bundle`` / ``validate_bundle`` / ``bundle_zip_bytes``: the rules of a valid bundle;
                  ``verify_read`` checks a file read from a bundle, ``read_bundle_zip`` an uploaded zip
- ``run_inputs``  domains, documents and provenance of a fitted run (``mixture_inputs_from_run``)
- ``export``      a saved run to a validated bundle in one call (``export_run``), and its `gem export` line
- ``errors``      ``MixtureError`` (bad input) and ``BundleError`` (a bundle that does not validate)
"""
from __future__ import annotations

from gem.mixture.bundle import (
    AGREE_TOL, ASSIGNMENT_COLUMNS, FORMATS, PER_DOCUMENT_FORMATS, bundle_of, bundle_zip_bytes, check_files,
    parse_formats, read_bundle_zip, read_manifest, validate_bundle, verify_read, write_bundle,
)
from gem.mixture.errors import BundleError, MixtureError
from gem.mixture.export import export_command, export_run, write_run_bundle
from gem.mixture.formats import (
    DEFAULT_OLMO_PATH_TEMPLATE, DEFAULT_PREFIX_TEMPLATE, DEFAULT_SPLIT_PREFIX_TEMPLATE, DOLMA_ATTRIBUTE_PREFIX,
    DOLMA_EXCLUDED_ATTRIBUTE, SCHEMA_VERSION, dumps_json, embedding_model_info, loads_json, mixture_to_dict, parse_hf_interleave,
    parse_megatron_blend, parse_olmo_core, parse_weborganizer, read_dolma_attributes, read_doremi_weights,
    read_mixture_json, read_regmix_weights, render_doremi, render_dolma_attributes, render_hf_interleave,
    render_megatron_blend, render_megatron_per_split, render_mixture_json, render_olmo_core, render_regmix,
    render_regmix_token_prior, render_weborganizer,
)
from gem.mixture.run_inputs import (
    RunMixtureInputs, corpus_fingerprint, embedding_model_from_meta, mixture_inputs_from_run, run_domains,
    run_metadata, topic_list_taxonomy,
)
from gem.mixture.weights import (
    DOMAIN_COLUMNS, STRATEGIES, SUM_TOL, Mixture, aggregate_parents, apply_overrides, build_mixture,
    epoch_warnings, make_domains, natural_target, natural_weights, temperature_weights, topic_domain_id, unimax_weights,
)

__all__ = [
    "natural_target",
    "AGREE_TOL", "ASSIGNMENT_COLUMNS", "BundleError", "DEFAULT_OLMO_PATH_TEMPLATE", "DEFAULT_PREFIX_TEMPLATE",
    "DEFAULT_SPLIT_PREFIX_TEMPLATE", "DOLMA_ATTRIBUTE_PREFIX", "DOLMA_EXCLUDED_ATTRIBUTE", "DOMAIN_COLUMNS", "FORMATS", "Mixture",
    "MixtureError", "PER_DOCUMENT_FORMATS", "RunMixtureInputs", "SCHEMA_VERSION", "STRATEGIES", "SUM_TOL",
    "aggregate_parents", "apply_overrides", "build_mixture", "bundle_of", "bundle_zip_bytes", "check_files", "corpus_fingerprint", "dumps_json",
    "embedding_model_from_meta", "embedding_model_info", "epoch_warnings", "export_command", "export_run", "loads_json", "make_domains",
    "mixture_inputs_from_run", "mixture_to_dict", "natural_weights", "parse_formats", "parse_hf_interleave",
    "parse_megatron_blend", "parse_olmo_core", "parse_weborganizer", "read_dolma_attributes", "read_doremi_weights",
    "read_mixture_json", "read_regmix_weights", "render_doremi", "render_dolma_attributes", "render_hf_interleave",
    "render_megatron_blend", "render_megatron_per_split", "render_mixture_json", "render_olmo_core", "render_regmix",
    "render_regmix_token_prior", "render_weborganizer", "run_domains", "run_metadata", "temperature_weights",
    "topic_domain_id", "topic_list_taxonomy", "unimax_weights", "read_bundle_zip", "read_manifest", "validate_bundle", "verify_read", "write_bundle",
    "write_run_bundle",
]
