-- Fortress database, migration 6: exactly one usage row per request across usage writer restarts.
-- Each proxy worker numbers the batches it sends to its writer process (one "stream" per worker
-- process start). The writer stores a batch and its number in one transaction and skips a batch whose
-- number is not above the stream's last: a batch committed just before a writer died, whose
-- acknowledgement was lost, is sent again and not stored twice.
CREATE TABLE usage_streams (
    stream TEXT PRIMARY KEY,                    -- host:pid:start of the proxy worker
    seq    INTEGER NOT NULL,                    -- last batch committed
    ts     REAL NOT NULL                        -- when; streams idle for a week are forgotten
);
