-- How many rows were rejected, per dataset, file and reason.
SELECT dataset, source, regexp_replace(reason, ':.*', '') AS reason, count(*) AS rows, min(line) AS first_line
FROM rejects
GROUP BY ALL
ORDER BY rows DESC;
