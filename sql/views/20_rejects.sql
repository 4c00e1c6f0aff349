-- Rows that could not be used, with the file, line and reason.
CREATE OR REPLACE VIEW rejects AS
SELECT dataset, source, line, id, reason, raw, ingested_at, batch
FROM _rejects;
