-- Per-neuron statistics, per dataset, model, kind, pooling, layer, neuron, split and label.
-- Merged from per-chunk sufficient statistics written at extract time (sums in float64).
CREATE OR REPLACE VIEW neuron_stats AS
SELECT s.dataset, f.model, s.fs AS feature_set, s.kind, s.pooling, s.layer, s.neuron, s.split, s.label,
       sum(s.n) AS count,
       sum(s.sum) / sum(s.n) AS mean,
       CASE WHEN sum(s.n) > 1
            THEN sqrt(greatest(sum(s.sumsq) - sum(s.sum) * sum(s.sum) / sum(s.n), 0) / (sum(s.n) - 1))
       END AS std,
       min(s.min) AS min,
       max(s.max) AS max,
       sum(s.npos) / sum(s.n) AS frac_pos
FROM _stats s
JOIN feature_sets f ON f.dataset = s.dataset AND f.feature_set = s.fs
GROUP BY s.dataset, f.model, s.fs, s.kind, s.pooling, s.layer, s.neuron, s.split, s.label;
