-- Per dataset, kind, pooling and layer: neurons, mean activation, share of positive values.
-- param split train
SELECT dataset, kind, pooling, layer, count(DISTINCT neuron) AS neurons,
       round(sum(mean * count) / sum(count), 4) AS mean,
       round(sum(frac_pos * count) / sum(count), 4) AS frac_pos
FROM neuron_stats
WHERE split = $split
GROUP BY ALL
ORDER BY dataset, kind, pooling, layer;
