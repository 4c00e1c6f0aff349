-- One row per ingested text. Partition keys: dataset, batch (one batch per ingested file).
CREATE OR REPLACE VIEW texts AS
SELECT dataset, id, text, label, split, content_hash, source, line, seq, is_retweet, ingested_at, batch
FROM _texts;
