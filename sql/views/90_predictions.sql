-- Predictions written by `stcstore score --output STORE/predictions` (one row per text and classifier).
-- probabilities follow the classifier's class order (a regression classifier: value instead, label and
-- probabilities null); run_date is the partition the run appended to.
CREATE OR REPLACE VIEW predictions AS
SELECT id, classifier, classifier_fingerprint, label, probabilities, list_max(probabilities) AS confidence,
       scored_at, text_hash, value, run_date
FROM _predictions;
