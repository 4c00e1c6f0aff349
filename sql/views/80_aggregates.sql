-- One row per aggregated STC classifier tried by `stcstore fit`: (kind, pooling, η, L_temp) with its
-- validation-chosen strength. chosen = the one classifier saved (best validation score). aggregator: lr
-- (the paper's L1 aggregate) or consolidation (`fit --aggregator consolidation`: no strength, lam/C null).
CREATE OR REPLACE VIEW aggregates AS
SELECT dataset, fit_id, feature_set, kind, pooling, eta, l_temp, n_neurons, n_nonzero, lam, C,
       val_accuracy, val_macro_f1, val_log_loss, train_accuracy, path_points, seconds, chosen,
       val_r2, val_mae, val_pearson, val_spearman, val_mse,  -- regression targets (else null)
       coalesce(aggregator, 'lr') AS aggregator
FROM _aggregates;
