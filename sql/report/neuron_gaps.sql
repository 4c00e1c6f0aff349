-- Report: label effect size, in one split, of the neurons a classifier reads (_report_neurons).
SELECT g.kind, g.pooling, g.layer, g.neuron, g.effect_size, g.highest_label, g.lowest_label
FROM neuron_label_gaps g
SEMI JOIN _report_neurons r
  ON r.kind = g.kind AND r.pooling = g.pooling AND r.layer = g.layer AND r.neuron = g.neuron
WHERE g.dataset = $dataset AND g.feature_set = $feature_set AND g.split = $split;
