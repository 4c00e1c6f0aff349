-- Report: per-label statistics, in one split, of the neurons a classifier reads (_report_neurons).
SELECT s.kind, s.pooling, s.layer, s.neuron, s.label, s.count, s.mean, s.std
FROM neuron_stats s
SEMI JOIN _report_neurons r
  ON r.kind = s.kind AND r.pooling = s.pooling AND r.layer = s.layer AND r.neuron = s.neuron
WHERE s.dataset = $dataset AND s.feature_set = $feature_set AND s.split = $split AND s.label IS NOT NULL
ORDER BY s.kind, s.pooling, s.layer, s.neuron, s.label;
