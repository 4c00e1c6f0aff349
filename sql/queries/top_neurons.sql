-- Neurons whose mean differs most between labels, in units of their pooled within-label std.
-- param dataset %
-- param split train
-- param kind %
-- param top 20
SELECT dataset, kind, pooling, layer, neuron, highest_label, lowest_label,
       round(mean_gap, 4) AS mean_gap, round(effect_size, 3) AS effect_size
FROM neuron_label_gaps
WHERE dataset LIKE $dataset AND split = $split AND kind LIKE $kind
ORDER BY effect_size DESC NULLS LAST, mean_gap DESC, dataset, kind, pooling, layer, neuron
LIMIT $top;
