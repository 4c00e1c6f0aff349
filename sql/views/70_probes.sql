-- One row per visited point of every per-layer probe's regularisation path (written by `stcstore fit`).
-- chosen = the point picked on validation for that probe. C = 1 / (n_train * lam), scikit-learn's scale.
CREATE OR REPLACE VIEW probes AS
SELECT dataset, fit_id, feature_set, kind, pooling, layer, step, lam, C, n_nonzero, objective,
       val_accuracy, val_macro_f1, val_log_loss, iterations, seconds, chosen,
       val_r2, val_mae, val_pearson, val_spearman, val_mse,  -- regression targets (else null)
       coalesce(probe, 'lr') AS probe  -- lr, or slp (`fit --probe slp`: one row per epoch, step = epoch)
FROM _probes;
