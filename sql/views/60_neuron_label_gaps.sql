-- Per neuron and split: how far apart its per-label means are, in units of the pooled within-label std.
CREATE OR REPLACE VIEW neuron_label_gaps AS
WITH g AS (
    SELECT dataset, model, feature_set, kind, pooling, layer, neuron, split,
           max(mean) - min(mean) AS mean_gap,
           sqrt(sum((count - 1) * coalesce(std, 0) * coalesce(std, 0))
                / greatest(sum(count) - count(*), 1)) AS pooled_std,
           arg_max(label, mean) AS highest_label,
           arg_min(label, mean) AS lowest_label,
           count(*) AS labels
    FROM neuron_stats
    WHERE label IS NOT NULL
    GROUP BY dataset, model, feature_set, kind, pooling, layer, neuron, split
)
SELECT *, mean_gap / nullif(pooled_std, 0) AS effect_size FROM g WHERE labels > 1;
