-- Per kind and layer: the largest label effect size of any neuron (any pooling), and how many exceed 0.5.
-- param dataset %
-- param split train
SELECT dataset, kind, layer, round(max(effect_size), 3) AS best_effect,
       count(*) FILTER (WHERE effect_size > 0.5) AS neurons_over_half
FROM neuron_label_gaps
WHERE dataset LIKE $dataset AND split = $split
GROUP BY ALL
ORDER BY dataset, kind, layer;
