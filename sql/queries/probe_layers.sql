-- The validation-chosen point of every per-layer probe: the layer-wise curve of a fit.
-- param dataset %
-- param fit_id %
SELECT dataset, fit_id, kind, pooling, layer, n_nonzero, C,
       round(val_accuracy, 4) AS val_accuracy, round(val_macro_f1, 4) AS val_macro_f1,
       round(val_log_loss, 4) AS val_log_loss
FROM probes
WHERE dataset LIKE $dataset AND fit_id LIKE $fit_id AND chosen
ORDER BY dataset, fit_id, kind, pooling, layer;
