-- The ingest log: one row per ingested file.
CREATE OR REPLACE VIEW sources AS
SELECT dataset, batch, source, sha256, config_hash, format, rows_read, ingested, duplicates, rejected,
       seq_start, seq_end, ingested_at
FROM _sources;
