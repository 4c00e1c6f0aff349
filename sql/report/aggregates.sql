-- Report: every aggregated classifier (kind, pooling, η, L_temp) one fit tried.
SELECT kind, pooling, eta, l_temp, n_neurons, n_nonzero, C, val_accuracy, val_macro_f1, val_log_loss,
       val_r2, val_mae, val_pearson, val_spearman,
       train_accuracy, chosen, aggregator
FROM aggregates
WHERE dataset = $dataset AND fit_id = $fit_id
ORDER BY aggregator DESC, kind, pooling, eta, l_temp;
