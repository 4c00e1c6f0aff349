-- Report: the validation-chosen point of every per-layer probe of one fit.
SELECT kind, pooling, layer, n_nonzero, C, val_accuracy, val_macro_f1, val_log_loss,
       val_r2, val_mae, val_pearson, val_spearman
FROM probes
WHERE dataset = $dataset AND fit_id = $fit_id AND chosen
ORDER BY kind, pooling, layer;
