-- One row per feature set: what produced it (its fingerprint) and how much it holds.
CREATE OR REPLACE VIEW feature_sets AS
SELECT dataset, feature_set, model, model_type, adapter, weights_sha256, max_length, dtype, torch_dtype,
       n_layers, hidden_size, ffn_size, n_columns, chunks, rows, bytes, stcstore_version,
       stats_only  -- neuron statistics only (`extract --stats-only`): no values to fit or score on
FROM _feature_sets;
