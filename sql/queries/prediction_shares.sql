-- Predicted label shares per run date and classifier (for watching a nightly job drift).
-- param classifier %
SELECT run_date, classifier, label, count(*) AS texts,
       round(count(*) / sum(count(*)) OVER (PARTITION BY run_date, classifier), 4) AS share,
       round(avg(confidence), 4) AS mean_confidence
FROM predictions
WHERE classifier LIKE $classifier
GROUP BY run_date, classifier, label
ORDER BY run_date, classifier, label;
