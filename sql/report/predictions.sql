-- Report: predicted labels per run date of one classifier (by fingerprint) in STORE/predictions.
SELECT run_date, label, count(*) AS texts,
       count(*) / sum(count(*)) OVER (PARTITION BY run_date) AS share,
       avg(confidence) AS mean_confidence
FROM predictions
WHERE classifier_fingerprint = $fingerprint
GROUP BY run_date, label
ORDER BY run_date, label;
